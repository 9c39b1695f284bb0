"""Matrix files: variants x config sets x machines x workloads x repeats.

Expansion is pure; schema errors name file, line and key and say what is
allowed.  Cells have stable keys, so sharding and --resume are deterministic.
"""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import datafiles
from orchestrator.errors import UserError, did_you_mean
from orchestrator.kernel.kconfig import load_config_set
from orchestrator.matrix.order import RepeatTarget, more_repeats, position as williams_position
from orchestrator.kernel.series import load_series
from orchestrator.kernel.variants import VARIANTS_FILE, load_variants, resolve as resolve_variant
from orchestrator.paths import PROJECT_ROOT, safe_name
from orchestrator.target.base import DEFAULT_TARGET, TARGETS_DIR, available_targets
from orchestrator.vm.machine import available_shapes, shape_by_name
from orchestrator.workload import definitions  # its WORKLOADS_DIR read at call time (tests point it elsewhere)
from orchestrator.workload.timing import is_timed

MATRICES_DIR = PROJECT_ROOT / "matrices"
AXES = ("variant", "config_set", "machine", "workload")
TOP_KEYS = {
    "name": "a name for the run (string)",
    "description": "free text",
    "source": "kernel source (tarball path, PATH@REF, or a work tree); default Debian linux-source-6.12",
    "series": "patch series directory relative to the repository (default: patches)",
    "variants": "list of variant names from the series' variants.yaml",
    "config_sets": "list of config set names from kernel_configs/sets.yaml",
    "machines": "list of machine shapes from machines/*.yaml",
    "workloads": "list of workload names from workloads/*.yaml, or {name: ..., params: {...}} mappings",
    "repeats": "integer >= 1, or a mapping config set -> integer (e.g. {timing: 5, evidence: 1}) or target "
               "(e.g. {timing: {detect_pct: 10, pilot: 5, max: 30}}: a pilot, then as many repeats as detecting "
               "that change with 80% power needs, at most max)",
    "order": "interleaved (repeat 1 of every variant, then repeat 2 ..., variants in a Williams design so each "
             "follows each other equally often; the default when the matrix has several variants) or blocked "
             "(all repeats of one cell, then the next)",
    "include": "list of extra cells: mappings of variant/config_set/machine/workload (+ params)",
    "exclude": "list of mappings; cells matching every given key are removed",
    "compare": "list of [A, B] variant pairs to compare (default: each variant against the first)",
    "target": "where the guests run: a target from targets/*.yaml (default local: this machine's QEMU)",
}
ORDERS = ("interleaved", "blocked")
MAX_CELLS = 5000  # bound the work a hostile or mistaken file can ask for


@dataclass(frozen=True)
class WorkloadRef:
    name: str
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        if not self.params:
            return self.name
        digest = hashlib.sha256(repr(self.params).encode()).hexdigest()[:6]
        return f"{self.name}~{digest}"

    def params_dict(self) -> dict[str, Any]:
        return dict(self.params)


@dataclass(frozen=True)
class Cell:
    variant: str
    config_set: str
    machine: str
    workload: WorkloadRef
    repeat: int

    @property
    def key(self) -> str:
        return f"{self.variant}.{self.config_set}.{self.machine}.{self.workload.label}.r{self.repeat}"

    @property
    def timed(self) -> bool:
        """A cell of a `timed:` config set: it runs alone (matrix/scheduler.run_in_order)."""
        return is_timed(self.config_set)

    @property
    def build_key(self) -> tuple[str, str]:
        return (self.variant, self.config_set)

    def to_json(self) -> dict:
        return {"key": self.key, "variant": self.variant, "config_set": self.config_set, "machine": self.machine,
                "workload": self.workload.name, "params": self.workload.params_dict(), "repeat": self.repeat}


@dataclass
class Matrix:
    path: Path
    name: str
    source: str | None
    series: Path
    cells: list[Cell]
    compare: list[tuple[str, str]] = field(default_factory=list)
    order: str = "blocked"
    target: str = DEFAULT_TARGET  # targets/NAME.yaml (`target:`; --target overrides it)
    targets: dict[str, RepeatTarget] = field(default_factory=dict)  # config set -> `repeats: {detect_pct: ...}`

    def more_repeats(self, cells: list[Cell], records: list) -> tuple[list[Cell], list[str]]:
        """Repeats a target asks for after its pilot ran (matrix/order.more_repeats), in run order."""
        variants = list(dict.fromkeys(c.variant for c in self.cells))
        new, lines = more_repeats(cells, self.targets, records, self.compare or [(variants[0], v) for v in variants[1:]])
        return (interleave(new, variants) if self.order == "interleaved" else new), lines


class _MatrixWording(datafiles.Wording):
    """A missing key is named in the location, with what it is for (`workloads: missing; list of ...`)."""

    def missing(self, at: datafiles.KeyPath, keys: dict[str, str], noun: str) -> str:
        key, help = next(iter(keys.items()))
        return self.say((*at, key), f"missing; {help}")


_NAME = datafiles.Str(expected="a name (string)", numbers_as_text=True)
_NAMES = datafiles.OneOf((_NAME, datafiles.List(_NAME, min_items=1, expected="a non-empty list of names")),
                         expected="a name or a non-empty list of names")
_WORKLOAD = datafiles.OneOf((_NAME, datafiles.Mapping({
    "name": datafiles.Field(_NAME, required=True, help="a workload from workloads/*.yaml"),
    "params": datafiles.Field(datafiles.MapOf(datafiles.Scalar(expected="a scalar (parameter values are scalars)"),
                                              expected="a mapping of parameter: value"), default={},
                              help="parameter: value"),
})), expected="a workload name or {name:, params:}")
_CELL_FILTER = datafiles.Mapping({axis: datafiles.Field(_WORKLOAD if axis == "workload" else _NAME) for axis in AXES},
                                 expected=f"a mapping with some of: {', '.join(AXES)}")
_REPEAT = datafiles.Int(1, 1000, expected="an integer from 1 to 1000")
# An included cell may say how often it runs (a quick extra cell in a matrix of many repeats).
_INCLUDE = datafiles.Mapping({**_CELL_FILTER.fields, "repeats": datafiles.Field(
    _REPEAT, help="how often this cell runs (default: its config set's repeats)")},
    expected=f"a mapping with some of: {', '.join(AXES)}, repeats")
_TARGET_TEXT = "an integer from 1 to 1000, or {detect_pct: N, pilot: P, max: M}"
_TARGET = datafiles.Mapping({
    "detect_pct": datafiles.Field(datafiles.Int(1, 1000, expected="a percentage from 1 to 1000"), required=True,
                                  help="the change (%) every comparison must detect with 80% power"),
    "pilot": datafiles.Field(datafiles.Int(2, 1000), default=5, help="repeats run first to measure the noise"),
    "max": datafiles.Field(datafiles.Int(2, 1000), default=30, help="at most this many repeats"),
}, expected="a mapping with detect_pct (and pilot, max)")
_SCHEMA_OF = {
    "name": _NAME, "description": datafiles.Scalar(), "source": datafiles.Str(), "series": datafiles.Str(),
    "variants": _NAMES, "config_sets": _NAMES, "machines": _NAMES,
    "workloads": datafiles.List(_WORKLOAD, min_items=1, expected="a non-empty list"),
    "repeats": datafiles.OneOf((_REPEAT, datafiles.MapOf(datafiles.OneOf((_REPEAT, _TARGET), expected=_TARGET_TEXT))),
                               expected=TOP_KEYS["repeats"]),
    "order": datafiles.Str(choices=ORDERS, matching=f"one of: {', '.join(ORDERS)}"),
    "include": datafiles.List(_INCLUDE, expected="a list of mappings"),
    "exclude": datafiles.List(_CELL_FILTER, expected="a list of mappings"),
    "compare": datafiles.List(datafiles.List(_NAME, min_items=2, max_items=2, expected="exactly two variant names"),
                              expected="a list of [A, B] variant pairs"),
    "target": _NAME,
}
MATRIX_SCHEMA = datafiles.Mapping(
    {k: datafiles.Field(_SCHEMA_OF[k], required=k == "workloads", help=help) for k, help in TOP_KEYS.items()},
    expected=f"a mapping with keys: {', '.join(TOP_KEYS)}")

Named = list[tuple[str, datafiles.KeyPath]]  # names with where each was written


def _safe(doc: datafiles.Document, at: datafiles.KeyPath, name: str, *, in_list: bool = False) -> str:
    """A name that cannot climb out of its directory; in_list: an item of a name list,
    reported under the list's key (`variants: invalid variants '../etc'`)."""
    key = datafiles.render(at[:-1] if in_list else at)
    try:
        return safe_name(name, what=key)
    except UserError as exc:
        raise doc.error(at, exc.message + "; allowed: A-Z a-z 0-9 . _ + -", subject=key) from None


def _names(doc: datafiles.Document, key: str, default: list[str]) -> Named:
    """A name or a list of names (each a safe name), with where each is."""
    if key not in doc.data:
        return [(n, (key,)) for n in default]
    value = doc.data[key]
    if isinstance(value, str):
        return [(_safe(doc, (key,), value), (key,))]
    return [(_safe(doc, (key, i), n, in_list=True), (key, i)) for i, n in enumerate(value)]


def _workload(doc: datafiles.Document, value: str | dict, at: datafiles.KeyPath) -> WorkloadRef:
    if isinstance(value, str):
        return _checked_workload(doc, at, WorkloadRef(_safe(doc, at, value)))
    params = tuple(sorted((str(k), v) for k, v in value["params"].items()))
    return _checked_workload(doc, at, WorkloadRef(_safe(doc, (*at, "name"), value["name"]), params))


def _checked_variants(doc: datafiles.Document, named: Named, series: Path) -> None:
    """Every variant is named in the series' variants.yaml (when the series has one)."""
    if not (series / VARIANTS_FILE).is_file():
        return
    known = load_variants(series)
    for name, at in named:
        if name not in known:
            raise doc.error(at, f"unknown variant {name!r}{did_you_mean(name, known)}; "
                                f"variants in {series / VARIANTS_FILE}: {', '.join(known)}", subject="variants")


def _checked_series(doc: datafiles.Document, series: Path, variants: list[str]) -> None:
    """The series is read as the run will read it (every variant resolved to its
    patches), so a missing path, a directory without patches or a bad patch is
    refused at load time (`--list`), not when the run reaches the build."""
    at = ("series",)
    if not series.exists():
        raise doc.error(at, f"{series} does not exist",
                        hint="give a directory with variants.yaml and its patches (like patches/), an mbox or a mail file")
    if series.is_dir() and not (series / VARIANTS_FILE).is_file():
        try:
            found = len(load_series(series).patches)
        except UserError as exc:
            said = exc.message if str(series) in exc.message else f"{series}: {exc.message}"
            raise doc.error(at, said, hint=exc.hint) from None
        raise doc.error(at, f"{series} has {found} patch(es) but no {VARIANTS_FILE}, so the variants "
                            f"{', '.join(variants)} name nothing in it",
                        hint=f"add {series / VARIANTS_FILE}: `variants: {{baseline: [], NAME: [0001-....patch]}}` "
                             "(see patches/variants.yaml)")
    for name in variants:
        try:
            resolve_variant(series, name)
        except UserError as exc:
            raise doc.error(at, f"variant {name!r}: {exc.message}", hint=exc.hint) from None


def _checked_config_sets(doc: datafiles.Document, named: Named) -> None:
    """Every config set (or fragment list) resolves, before anything is built."""
    for name, at in named:
        try:
            load_config_set(name)
        except UserError as exc:
            raise doc.error(at, exc.message + (f"; {exc.hint}" if exc.hint else ""), subject="config_sets") from None


def _checked_workload(doc: datafiles.Document, at: datafiles.KeyPath, ref: WorkloadRef) -> WorkloadRef:
    """The workload exists and every parameter is known and matches its pattern:
    checked when the matrix is loaded, before listing, building or booting."""
    known = sorted(p.stem for p in definitions.WORKLOADS_DIR.glob("*.yaml"))
    if ref.name not in known:
        raise doc.error(at, f"unknown workload {ref.name!r}{did_you_mean(ref.name, known)}; "
                            f"known workloads: {', '.join(known)}")
    workload = definitions.load_workload(ref.name)
    given = ref.params_dict()
    for pname in given:
        if pname not in workload.params:
            raise doc.error((*at, "params", pname),
                            f"workload {ref.name} has no parameter {pname!r}{did_you_mean(pname, workload.params)}; "
                            f"its parameters: {', '.join(workload.params) or '(none)'}")
    try:
        workload.resolve_params(given)
    except UserError as exc:
        raise doc.error((*at, "params"), exc.message + (f" ({exc.hint})" if exc.hint else "")) from None
    return ref


def _checked_machines(doc: datafiles.Document, named: Named) -> None:
    """Every machine shape exists (a path is read as is) and loads."""
    known = available_shapes()
    for name, at in named:
        if "/" not in name and not name.endswith((".yaml", ".yml")) and name not in known:
            raise doc.error(at, f"unknown machine shape {name!r}{did_you_mean(name, known)}; "
                                f"known shapes: {', '.join(known)}", subject="machines")
        try:
            shape_by_name(name)
        except UserError as exc:
            raise doc.error(at, exc.message, subject="machines") from None


def _cell_filter(doc: datafiles.Document, flt: dict[str, Any], at: datafiles.KeyPath) -> dict[str, Any]:
    return {axis: _workload(doc, v, (*at, axis)) if axis == "workload" else _safe(doc, (*at, axis), v)
            for axis, v in flt.items()}


def _matches(cell: Cell, flt: dict[str, Any]) -> bool:
    for axis, want in flt.items():
        have = getattr(cell, axis)
        if axis == "workload":
            if have.name != want.name or (want.params and have.params != want.params):
                return False
        elif have != want:
            return False
    return True


def load_matrix(spec: str | Path | None) -> Matrix:
    """A matrix by name (matrices/NAME.yaml) or path; default: matrices/default.yaml."""
    path = Path(spec) if spec and (str(spec).endswith((".yaml", ".yml")) or Path(spec).is_file()) else MATRICES_DIR / f"{safe_name(str(spec or 'default'), what='matrix name')}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in MATRICES_DIR.glob("*.yaml")))
        raise UserError(f"matrix {path} not found", hint=f"known matrices: {known}")
    # Anchors/aliases are how YAML bombs expand; a matrix has no use for them.
    doc = datafiles.load(path, MATRIX_SCHEMA, what="matrix", wording=_MatrixWording(), allow_aliases=False)
    fields = doc.data

    variants_named = _names(doc, "variants", ["baseline", "v4", "v4-fixed"])
    config_sets_named = _names(doc, "config_sets", ["evidence"])
    machines_named = _names(doc, "machines", ["default"])
    variants = [n for n, _ in variants_named]
    config_sets = [n for n, _ in config_sets_named]
    machines = [n for n, _ in machines_named]
    workloads = [_workload(doc, w, ("workloads", i)) for i, w in enumerate(fields["workloads"])]
    repeats = _repeats(doc, config_sets)
    order = fields.get("order", "interleaved" if len(variants) > 1 else "blocked")
    targets = _targets(doc)
    most = max([*repeats.values(), *(t.cap for t in targets.values())])
    if len(variants) * len(config_sets) * len(machines) * len(workloads) * most > MAX_CELLS:
        raise doc.error((), f"expands to more than {MAX_CELLS} cells", subject="(matrix)")
    _checked_machines(doc, machines_named)

    cells = [Cell(v, c, m, w, r) for v, c, m, w in itertools.product(variants, config_sets, machines, workloads)
             for r in range(1, repeats[c] + 1)]
    for key in ("exclude", "include"):
        if key not in fields:
            continue
        own_repeats = [f.get("repeats") for f in fields[key]]
        filters = [_cell_filter(doc, {a: v for a, v in f.items() if a != "repeats"}, (key, i))
                   for i, f in enumerate(fields[key])]
        if key == "exclude":
            cells = [c for c in cells if not any(_matches(c, f) for f in filters)]
        else:
            for i, f in enumerate(filters):
                missing = [a for a in AXES if a not in f and a not in ("config_set", "machine")]
                if missing:
                    raise doc.error(("include", i), f"an included cell needs: {', '.join(missing)}")
                config_set = f.get("config_set", config_sets[0])
                for r in range(1, (own_repeats[i] or repeats.get(config_set, max(repeats.values()))) + 1):
                    cell = Cell(f["variant"], config_set, f.get("machine", machines[0]), f["workload"], r)
                    if cell not in cells:
                        cells.append(cell)
    if "compare" in fields:
        compare = [tuple(_safe(doc, ("compare", i, j), n, in_list=True) for j, n in enumerate(pair))
                   for i, pair in enumerate(fields["compare"])]
    else:
        compare = [(variants[0], v) for v in variants[1:]]
    name = str(fields.get("name", path.stem))
    source = str(fields["source"]) if fields.get("source") else None
    series = PROJECT_ROOT / fields.get("series", "patches")
    # Names that only the series or kernel_configs/ know, checked before anything runs.
    _checked_variants(doc, variants_named, series)
    _checked_config_sets(doc, config_sets_named)
    # (an included cell's name: the error points at the include list)
    extra_v = dict.fromkeys(c.variant for c in cells if c.variant not in variants)
    extra_c = dict.fromkeys(c.config_set for c in cells if c.config_set not in config_sets)
    _checked_variants(doc, [(n, ("include",)) for n in extra_v], series)
    _checked_series(doc, series, list(dict.fromkeys(c.variant for c in cells)))
    _checked_config_sets(doc, [(n, ("include",)) for n in extra_c])
    if order == "interleaved":
        cells = interleave(cells, variants)
    target = str(fields.get("target", DEFAULT_TARGET))
    if target not in available_targets():
        raise doc.error(("target",), f"unknown target {target!r}{did_you_mean(target, available_targets())}",
                        hint=f"name one of the targets in {TARGETS_DIR}: {', '.join(available_targets())}")
    return Matrix(path, name, source, series, cells, compare, order, target, targets=targets)


def _repeats(doc: datafiles.Document, config_sets: list[str]) -> dict[str, int]:
    """Repeats per config set: one integer for all, or {config set: integer}."""
    given = doc.data.get("repeats")
    if given is None:
        return {c: 1 for c in config_sets}
    if isinstance(given, dict):
        unknown = [k for k in given if k not in config_sets]
        if unknown:
            raise doc.error(("repeats", unknown[0]), f"not a config set of this matrix; its config sets: {', '.join(config_sets)}")
        missing = [c for c in config_sets if c not in given]
        if missing:
            raise doc.error(("repeats",), f"no count for config set(s) {', '.join(missing)}")
        return {c: v["pilot"] if isinstance(v, dict) else v for c, v in given.items()}
    return {c: given for c in config_sets}


def _targets(doc: datafiles.Document) -> dict[str, RepeatTarget]:
    """Config sets whose repeats follow from a detectable change (matrix/order.more_repeats)."""
    given = doc.data.get("repeats")
    out = {}
    for c, v in (given.items() if isinstance(given, dict) else ()):
        if isinstance(v, dict):
            if v["pilot"] > v["max"]:
                raise doc.error(("repeats", c, "pilot"), f"{v['pilot']} is more than max ({v['max']})",
                                hint="raise max or lower pilot")
            out[c] = RepeatTarget(v["detect_pct"], v["pilot"], v["max"])
    return out


def interleave(cells: list[Cell], variants: list[str]) -> list[Cell]:
    """Run order that spreads machine drift and carry-over over every variant alike.

    Repeat 1 of every cell first, then repeat 2, and so on; within a repeat,
    the cells of each group (config set, machine, workload) run one variant
    after the other, in the order of a Williams design (matrix/order.py: two
    variants A B, B A, ...; three: ABC BCA CAB CBA ACB BAC), so each variant
    follows each other one equally often.  Cell keys do not change.
    """
    rank = {v: i for i, v in enumerate(variants)}
    members: dict[tuple, list[str]] = {}  # group -> its variants, in matrix order (rotation is within a group)
    for c in cells:
        members.setdefault((c.config_set, c.machine, c.workload), [])
        if c.variant not in members[(c.config_set, c.machine, c.workload)]:
            members[(c.config_set, c.machine, c.workload)].append(c.variant)
    for names in members.values():
        names.sort(key=lambda v: rank.get(v, len(variants)))
    group_rank = {g: i for i, g in enumerate(members)}

    def key(c: Cell) -> tuple:
        group = (c.config_set, c.machine, c.workload)
        names = members[group]
        return (c.repeat, group_rank[group], williams_position(names.index(c.variant), len(names), c.repeat))

    return sorted(cells, key=key)


def shard(cells: list[Cell], index: int, total: int) -> list[Cell]:
    """Cells of shard index/total (1-based).  Deterministic and balanced: cells
    are grouped by build (variant, config set) so a shard builds few kernels,
    groups are ordered by a stable hash and dealt greedily to the least loaded shard."""
    if total < 1 or not 1 <= index <= total:
        raise UserError(f"--shard {index}/{total}: expected i/N with 1 <= i <= N")
    groups: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        groups.setdefault(c.build_key, []).append(c)
    loads = [0] * total
    owner: dict[str, int] = {}
    # Exact capacities (sizes differ by at most one) make the partition balanced.
    base, rem = divmod(len(cells), total)
    capacity = [base + (1 if i < rem else 0) for i in range(total)]
    # Big groups first, ties broken by a stable hash; a group larger than the
    # per-shard target is split so shards stay balanced.
    order = sorted(groups.items(), key=lambda kv: (-len(kv[1]), hashlib.sha256(repr(kv[0]).encode()).hexdigest()))
    for _, group in order:
        for c in sorted(group, key=lambda c: c.key):
            candidates = [i for i in range(total) if loads[i] < capacity[i]]
            # Prefer the shard that already builds this kernel.
            same = [i for i in candidates if any(owner.get(x.key) == i for x in group)]
            i = min(same or candidates, key=lambda i: (loads[i], i))
            owner[c.key] = i
            loads[i] += 1
    return [c for c in cells if owner[c.key] == index - 1]
