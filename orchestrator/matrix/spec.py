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

import yaml

from orchestrator.errors import UserError, did_you_mean
from orchestrator.paths import PROJECT_ROOT, safe_name

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
    "repeats": "integer >= 1, or a mapping config set -> integer (e.g. {timing: 5, evidence: 1})",
    "order": "interleaved (repeat 1 of every variant, then repeat 2 in a rotated order ...; the default when "
             "the matrix has several variants) or blocked (all repeats of one cell, then the next)",
    "include": "list of extra cells: mappings of variant/config_set/machine/workload (+ params)",
    "exclude": "list of mappings; cells matching every given key are removed",
    "compare": "list of [A, B] variant pairs to compare (default: each variant against the first)",
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


def _err(path: Path, node: yaml.Node | None, key: str, msg: str) -> UserError:
    line = f":{node.start_mark.line + 1}" if node is not None else ""
    return UserError(f"{path}{line}: {key}: {msg}")


def _scalar_list(path: Path, node: yaml.Node, key: str) -> list[str]:
    if isinstance(node, yaml.ScalarNode):
        return [_name(path, node, key)]
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        raise _err(path, node, key, "expected a non-empty list of names")
    return [_name(path, item, key) for item in node.value]


def _name(path: Path, node: yaml.Node, key: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or not node.value:
        raise _err(path, node, key, "expected a name (string)")
    try:
        return safe_name(str(node.value), what=key)
    except UserError as exc:
        raise _err(path, node, key, exc.message + "; allowed: A-Z a-z 0-9 . _ + -") from None


def _params(path: Path, node: yaml.Node, key: str) -> tuple[tuple[str, Any], ...]:
    if not isinstance(node, yaml.MappingNode):
        raise _err(path, node, key, "expected a mapping of parameter: value")
    out = []
    for k, v in node.value:
        if not isinstance(v, yaml.ScalarNode):
            raise _err(path, v, f"{key}.{k.value}", "parameter values must be scalars")
        out.append((str(k.value), yaml.safe_load(yaml.serialize(v)) if v.tag != "tag:yaml.org,2002:str" else v.value))
    return tuple(sorted(out))


def _workload(path: Path, node: yaml.Node, key: str) -> WorkloadRef:
    if isinstance(node, yaml.ScalarNode):
        return _checked_workload(path, node, key, WorkloadRef(_name(path, node, key)))
    if isinstance(node, yaml.MappingNode):
        fields = {k.value: v for k, v in node.value}
        unknown = set(fields) - {"name", "params"}
        if unknown or "name" not in fields:
            raise _err(path, node, key, "expected {name: WORKLOAD, params: {...}}" + (f"; unknown keys: {', '.join(sorted(unknown))}" if unknown else ""))
        params = _params(path, fields["params"], f"{key}.params") if "params" in fields else ()
        return _checked_workload(path, node, key, WorkloadRef(_name(path, fields["name"], f"{key}.name"), params))
    raise _err(path, node, key, "expected a workload name or {name:, params:}")


def _checked_variants(path: Path, node: yaml.Node | None, names: list[str], series: Path) -> None:
    """Every variant is named in the series' variants.yaml (when the series has one)."""
    from orchestrator.kernel.variants import VARIANTS_FILE, load_variants
    if not (series / VARIANTS_FILE).is_file():
        return
    known = load_variants(series)
    for i, name in enumerate(names):
        if name not in known:
            item = node.value[i] if isinstance(node, yaml.SequenceNode) and i < len(node.value) else node
            raise _err(path, item, "variants", f"unknown variant {name!r}{did_you_mean(name, known)}; "
                                               f"variants in {series / VARIANTS_FILE}: {', '.join(known)}")


def _checked_config_sets(path: Path, node: yaml.Node | None, names: list[str]) -> None:
    """Every config set (or fragment list) resolves, before anything is built."""
    from orchestrator.kernel.kconfig import load_config_set
    for i, name in enumerate(names):
        try:
            load_config_set(name)
        except UserError as exc:
            item = node.value[i] if isinstance(node, yaml.SequenceNode) and i < len(node.value) else node
            raise _err(path, item, "config_sets", exc.message + (f"; {exc.hint}" if exc.hint else "")) from None


def _checked_workload(path: Path, node: yaml.Node, key: str, ref: WorkloadRef) -> WorkloadRef:
    """The workload exists and every parameter is known and matches its pattern:
    checked when the matrix is loaded, before listing, building or booting."""
    from orchestrator.workload.definitions import WORKLOADS_DIR, load_workload  # workloads imports nothing of ours back
    known = sorted(p.stem for p in WORKLOADS_DIR.glob("*.yaml"))
    if ref.name not in known:
        raise _err(path, node, key, f"unknown workload {ref.name!r}{did_you_mean(ref.name, known)}; "
                                    f"known workloads: {', '.join(known)}")
    workload = load_workload(ref.name)
    given = ref.params_dict()
    for pname in given:
        if pname not in workload.params:
            raise _err(path, node, f"{key}.params.{pname}",
                       f"workload {ref.name} has no parameter {pname!r}{did_you_mean(pname, workload.params)}; "
                       f"its parameters: {', '.join(workload.params) or '(none)'}")
    try:
        workload.resolve_params(given)
    except UserError as exc:
        raise _err(path, node, f"{key}.params", exc.message + (f" ({exc.hint})" if exc.hint else "")) from None
    return ref


def _checked_machines(path: Path, node: yaml.Node | None, names: list[str]) -> None:
    """Every machine shape exists (a path is read as is) and loads."""
    from orchestrator.vm.machine import available_shapes, shape_by_name
    known = available_shapes()
    for i, name in enumerate(names):
        item = node.value[i] if isinstance(node, yaml.SequenceNode) else node
        if "/" not in name and not name.endswith((".yaml", ".yml")) and name not in known:
            raise _err(path, item, "machines", f"unknown machine shape {name!r}{did_you_mean(name, known)}; "
                                               f"known shapes: {', '.join(known)}")
        try:
            shape_by_name(name)
        except UserError as exc:
            raise _err(path, item, "machines", exc.message) from None


def _cell_filter(path: Path, node: yaml.Node, key: str) -> dict[str, Any]:
    if not isinstance(node, yaml.MappingNode):
        raise _err(path, node, key, f"expected a mapping with some of: {', '.join(AXES)}")
    out: dict[str, Any] = {}
    for k, v in node.value:
        if k.value not in AXES:
            raise _err(path, k, f"{key}.{k.value}", f"unknown key{did_you_mean(str(k.value), AXES)}; allowed: {', '.join(AXES)}")
        out[k.value] = _workload(path, v, f"{key}.workload") if k.value == "workload" else _name(path, v, f"{key}.{k.value}")
    return out


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
    text = path.read_text(errors="replace")
    if len(text) > 1_000_000:
        raise UserError(f"{path}: matrix file larger than 1 MB", hint="a matrix is a short YAML file")
    try:
        # Anchors/aliases are how YAML bombs expand; a matrix has no use for them.
        if _has_alias(text):
            raise UserError(f"{path}: YAML anchors/aliases are not allowed in matrix files", hint="write the values out")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(root, yaml.MappingNode):
        raise _err(path, root, "(top level)", f"expected a mapping with keys: {', '.join(TOP_KEYS)}")
    fields: dict[str, yaml.Node] = {}
    for k, v in root.value:
        if k.value not in TOP_KEYS:
            allowed = "; ".join(f"{n} ({d})" for n, d in TOP_KEYS.items())
            raise _err(path, k, str(k.value), f"unknown key{did_you_mean(str(k.value), TOP_KEYS)}; allowed: {allowed}")
        fields[k.value] = v

    def get_list(key: str, default: list[str]) -> list[str]:
        return _scalar_list(path, fields[key], key) if key in fields else default

    variants = get_list("variants", ["baseline", "v4", "v4-fixed"])
    config_sets = get_list("config_sets", ["evidence"])
    machines = get_list("machines", ["default"])
    if "workloads" in fields:
        wnode = fields["workloads"]
        if not isinstance(wnode, yaml.SequenceNode) or not wnode.value:
            raise _err(path, wnode, "workloads", "expected a non-empty list")
        workloads = [_workload(path, n, f"workloads[{i}]") for i, n in enumerate(wnode.value)]
    else:
        raise _err(path, root, "workloads", "missing; " + TOP_KEYS["workloads"])
    repeats = _repeats(path, fields.get("repeats"), config_sets)
    order = "interleaved" if len(variants) > 1 else "blocked"
    if "order" in fields:
        order = str(fields["order"].value)
        if order not in ORDERS:
            raise _err(path, fields["order"], "order", f"got {order!r}, expected one of: {', '.join(ORDERS)}")
    if len(variants) * len(config_sets) * len(machines) * len(workloads) * max(repeats.values()) > MAX_CELLS:
        raise _err(path, root, "(matrix)", f"expands to more than {MAX_CELLS} cells")
    _checked_machines(path, fields.get("machines"), machines)

    cells = [Cell(v, c, m, w, r) for v, c, m, w in itertools.product(variants, config_sets, machines, workloads)
             for r in range(1, repeats[c] + 1)]
    for key in ("exclude", "include"):
        if key not in fields:
            continue
        node = fields[key]
        if not isinstance(node, yaml.SequenceNode):
            raise _err(path, node, key, "expected a list of mappings")
        filters = [_cell_filter(path, n, f"{key}[{i}]") for i, n in enumerate(node.value)]
        if key == "exclude":
            cells = [c for c in cells if not any(_matches(c, f) for f in filters)]
        else:
            for i, f in enumerate(filters):
                missing = [a for a in AXES if a not in f and a not in ("config_set", "machine")]
                if missing:
                    raise _err(path, node.value[i], f"include[{i}]", f"an included cell needs: {', '.join(missing)}")
                config_set = f.get("config_set", config_sets[0])
                for r in range(1, repeats.get(config_set, max(repeats.values())) + 1):
                    cell = Cell(f["variant"], config_set, f.get("machine", machines[0]), f["workload"], r)
                    if cell not in cells:
                        cells.append(cell)
    compare: list[tuple[str, str]] = []
    if "compare" in fields:
        node = fields["compare"]
        if not isinstance(node, yaml.SequenceNode):
            raise _err(path, node, "compare", "expected a list of [A, B] variant pairs")
        for i, pair in enumerate(node.value):
            names = _scalar_list(path, pair, f"compare[{i}]")
            if len(names) != 2:
                raise _err(path, pair, f"compare[{i}]", "expected exactly two variant names")
            compare.append((names[0], names[1]))
    else:
        compare = [(variants[0], v) for v in variants[1:]]
    name = str(fields["name"].value) if "name" in fields else path.stem
    source = str(fields["source"].value) if "source" in fields and fields["source"].value else None
    series = PROJECT_ROOT / (str(fields["series"].value) if "series" in fields else "patches")
    # Names that only the series or kernel_configs/ know, checked before anything runs.
    _checked_variants(path, fields.get("variants"), variants, series)
    _checked_config_sets(path, fields.get("config_sets"), config_sets)
    extra_v = [c.variant for c in cells if c.variant not in variants]
    extra_c = [c.config_set for c in cells if c.config_set not in config_sets]
    # (an included cell's name: the error points at the include list)
    _checked_variants(path, fields.get("include") and yaml.ScalarNode("tag:yaml.org,2002:str", "", fields["include"].start_mark),
                      list(dict.fromkeys(extra_v)), series)
    _checked_config_sets(path, fields.get("include") and yaml.ScalarNode("tag:yaml.org,2002:str", "", fields["include"].start_mark),
                         list(dict.fromkeys(extra_c)))
    if order == "interleaved":
        cells = interleave(cells, variants)
    return Matrix(path, name, source, series, cells, compare, order)


def _repeats(path: Path, node: yaml.Node | None, config_sets: list[str]) -> dict[str, int]:
    """Repeats per config set: one integer for all, or {config set: integer}."""
    def count(n: yaml.Node, key: str) -> int:
        try:
            value = int(n.value)
        except (TypeError, ValueError):
            value = 0
        if not 1 <= value <= 1000:
            raise _err(path, n, key, "expected an integer from 1 to 1000")
        return value

    if node is None:
        return {c: 1 for c in config_sets}
    if isinstance(node, yaml.MappingNode):
        given = {str(k.value): count(v, f"repeats.{k.value}") for k, v in node.value}
        unknown = [k for k in given if k not in config_sets]
        if unknown:
            raise _err(path, node, f"repeats.{unknown[0]}", f"not a config set of this matrix; its config sets: {', '.join(config_sets)}")
        missing = [c for c in config_sets if c not in given]
        if missing:
            raise _err(path, node, "repeats", f"no count for config set(s) {', '.join(missing)}")
        return given
    return {c: count(node, "repeats") for c in config_sets}


def interleave(cells: list[Cell], variants: list[str]) -> list[Cell]:
    """Run order that spreads machine drift over every variant alike.

    Repeat 1 of every cell first, then repeat 2, and so on; within a repeat,
    the cells of each group (config set, machine, workload) run one variant
    after the other, in the matrix's variant order rotated by one place per
    repeat (two variants: A B, B A, A B, ...).  Cell keys do not change.
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
        rotated = (names.index(c.variant) - (c.repeat - 1)) % len(names)
        return (c.repeat, group_rank[group], rotated)

    return sorted(cells, key=key)


def _has_alias(text: str) -> bool:
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            return True
    return False


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
