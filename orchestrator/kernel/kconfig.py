"""Config fragments: load, merge with the kernel's merge_config.sh, verify.

The final .config must hold every requested option with the requested value;
a dropped option is an error naming the option and the fragment (ZRAM is
dropped without BLK_DEV, MGLRU never reaches KVM without ARM64_HW_AFDBM).
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import datafiles, proc
from orchestrator.errors import OptionsDropped, UserError, did_you_mean
from orchestrator.kernel.kconfig_deps import KconfigTree, explain
from orchestrator.paths import KERNEL_CONFIGS_DIR, safe_name

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_CONFIG_TARGET = re.compile(r"^(allnoconfig|allyesconfig|allmodconfig|defconfig|tinyconfig|[A-Za-z0-9_.-]+_defconfig)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


@dataclass(frozen=True)
class Fragment:
    name: str
    path: Path
    options: dict[str, str]  # CONFIG_X -> "y" | "m" | "n" | literal value
    lines: dict[str, int] = field(compare=False)  # CONFIG_X -> line number in the file


def parse_config_text(text: str, *, origin: str = "<config>", strict: bool = False) -> tuple[dict[str, str], dict[str, int]]:
    """Parse .config syntax; `# CONFIG_X is not set` means "n".

    strict: any other non-comment line is an error naming origin:line.
    """
    options: dict[str, str] = {}
    lines: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if m := _SET.match(line):
            options[m.group(1)], lines[m.group(1)] = m.group(2), lineno
        elif m := _UNSET.match(line):
            options[m.group(1)], lines[m.group(1)] = "n", lineno
        elif strict and line and not line.startswith("#"):
            raise UserError(
                f"{origin}:{lineno}: cannot parse {raw!r}",
                hint="each line must be CONFIG_NAME=value, '# CONFIG_NAME is not set', a comment or blank",
            )
    return options, lines


def load_fragment(name_or_path: str) -> Fragment:
    """A fragment by name (kernel_configs/NAME.config) or by path."""
    path = Path(name_or_path)
    if path.suffix != ".config" or not path.exists():
        safe_name(name_or_path, what="config fragment name")
        path = KERNEL_CONFIGS_DIR / f"{name_or_path}.config"
    if not path.is_file():
        known = sorted(p.stem for p in KERNEL_CONFIGS_DIR.glob("*.config"))
        raise UserError(f"unknown config fragment {name_or_path!r}", hint=f"known fragments: {', '.join(known)}; or give a path to a .config file")
    text = path.read_text(errors="replace")
    options, lines = parse_config_text(text, origin=str(path), strict=True)
    if not options:
        raise UserError(f"config fragment {path} sets no options", hint="add CONFIG_NAME=value lines")
    return Fragment(path.stem, path, options, lines)


@dataclass(frozen=True)
class ConfigSet:
    name: str
    fragments: tuple[Fragment, ...]
    # The in-tree config target the fragments are merged onto: allnoconfig (the
    # fast default) or e.g. defconfig / NAME_defconfig, as KernelCI and tuxmake build.
    base: str = "allnoconfig"

    def requested(self) -> dict[str, tuple[str, Fragment]]:
        """Option -> (value, fragment that set it last): later fragments win, as in merge_config.sh."""
        out: dict[str, tuple[str, Fragment]] = {}
        for frag in self.fragments:
            for opt, val in frag.options.items():
                out[opt] = (val, frag)
        return out

    def key(self) -> str:
        h = hashlib.sha256()
        if self.base != "allnoconfig":  # allnoconfig keys stay as they were before bases existed
            h.update(f"base={self.base}".encode() + b"\0")
        for frag in self.fragments:
            h.update(frag.name.encode() + b"\0" + frag.path.read_bytes() + b"\0")
        return h.hexdigest()


def sets_file() -> Path:
    return KERNEL_CONFIGS_DIR / "sets.yaml"


_TARGET_HINT = "use allnoconfig, defconfig, tinyconfig or NAME_defconfig (arch/arm64/configs/)"
_FRAGMENT_NAMES = datafiles.List(datafiles.Str(), expected="a list of fragment names")
# One set: [fragment, ...] on allnoconfig, or {base: TARGET, fragments: [...]}.
CONFIG_SET_SCHEMA = datafiles.OneOf((
    _FRAGMENT_NAMES,
    datafiles.Mapping({
        "base": datafiles.Field(datafiles.Str(pattern=_CONFIG_TARGET.pattern, matching="a config target", hint=_TARGET_HINT),
                                default="allnoconfig", help="in-tree config target the fragments go onto"),
        "fragments": datafiles.Field(_FRAGMENT_NAMES, default=[], help="merged in order"),
    }, hint="a set is a list of fragments, or a mapping with 'base' (a config target) and 'fragments'"),
), expected="a list of fragment names, or {base: TARGET, fragments: [...]}")
# Each set is checked when it is used, so one bad set does not stop the others.
SETS_SCHEMA = datafiles.Mapping({
    "sets": datafiles.Field(datafiles.MapOf(datafiles.Later()), default={}, help="name: fragments"),
    "default": datafiles.Field(datafiles.Str(), help="the set used when none is named"),
    "timed": datafiles.Field(datafiles.List(datafiles.Str(), expected="a list of config set names"), default=[],
                             help="sets whose cells are timed"),
})


def load_sets_file() -> datafiles.Document:
    """kernel_configs/sets.yaml, checked against SETS_SCHEMA (each set's body when it is used)."""
    return datafiles.load(sets_file(), SETS_SCHEMA, what="config sets", wording=datafiles.KeyNamedInText())


def load_config_set(spec: str | None) -> ConfigSet:
    """A named set from kernel_configs/sets.yaml, or a comma list of fragments."""
    doc = load_sets_file()
    sets = doc.data["sets"]
    name = spec or doc.data.get("default") or "evidence"
    base = "allnoconfig"
    if name in sets:
        names = doc.check(("sets", name), CONFIG_SET_SCHEMA)
        if isinstance(names, dict):
            base, names = names["base"], names["fragments"]
    elif "," in name or (KERNEL_CONFIGS_DIR / f"{name}.config").is_file() or name.endswith(".config"):
        names = [n.strip() for n in name.split(",") if n.strip()]
        name = "+".join(Path(n).stem for n in names)
    else:
        raise UserError(
            f"unknown config set {name!r}{did_you_mean(name, sets)}",
            hint=f"sets in {sets_file()}: {', '.join(sorted(sets))}; or a comma-separated list of fragments",
        )
    return ConfigSet(name, tuple(load_fragment(n) for n in names), base)


@dataclass(frozen=True)
class DroppedOption:
    option: str
    requested: str
    actual: str  # "n" when absent
    fragment: str
    line: int
    why: str = ""  # the unmet dependency, from the tree's Kconfig (kconfig_deps.explain)
    fix: tuple[str, ...] = ()  # fragment lines that would satisfy it

    def __str__(self) -> str:
        text = (f"{self.option}={self.requested} requested by {self.fragment}:{self.line} "
                f"but the final .config has {self.option}={self.actual}")
        return text + (f": {self.why}" if self.why else "")


def _normalise(value: str) -> str:
    return "n" if value in ("", "n") else value


def verify_config(final_text: str, config_set: ConfigSet) -> list[DroppedOption]:
    """Every requested option with its requested value, or the list of those that were not."""
    final, _ = parse_config_text(final_text)
    dropped = []
    for opt, (val, frag) in config_set.requested().items():
        actual = _normalise(final.get(opt, "n"))
        if actual != _normalise(val):
            dropped.append(DroppedOption(opt, val, actual, str(frag.path), frag.lines[opt]))
    return dropped


def generate_config(srctree: Path, objdir: Path, config_set: ConfigSet, make_env: dict[str, str], make_vars: list[str]) -> Path:
    """Base config target + fragments (merge_config.sh), then olddefconfig, then verify.

    allnoconfig: `merge_config.sh -n` does both steps.  Any other target
    (defconfig, NAME_defconfig): `make TARGET` first, then the fragments are
    merged onto that .config with `merge_config.sh -m`.
    """
    objdir.mkdir(parents=True, exist_ok=True)
    for argv in config_commands(srctree, objdir, config_set, make_vars):
        res = proc.run(argv, cwd=srctree, env=make_env, timeout=600)
        if res.returncode != 0:
            what = "merge_config.sh" if argv[0].endswith("merge_config.sh") else f"make {argv[-1]}"
            raise UserError(f"{what} failed for config set {config_set.name}:\n{(res.stdout + res.stderr)[-3000:]}",
                            hint=_target_hint(srctree, config_set) if what == f"make {config_set.base}" else "")
    config = objdir / ".config"
    final_text = config.read_text()
    dropped = verify_config(final_text, config_set)
    if dropped:
        raise dropped_error(config_set, explain_dropped(srctree, final_text, dropped))
    return config


def config_commands(srctree: Path, objdir: Path, config_set: ConfigSet, make_vars: list[str]) -> list[list[str]]:
    """The commands that make the .config, in order (pure: for tests and reproducers)."""
    merge = str(srctree / "scripts/kconfig/merge_config.sh")
    frags = [str(f.path) for f in config_set.fragments]
    olddef = ["make", "-s", f"O={objdir}", *make_vars, "olddefconfig"]
    if config_set.base == "allnoconfig":
        return [[merge, "-n", "-O", str(objdir), *frags], olddef]
    target = ["make", "-s", f"O={objdir}", *make_vars, config_set.base]
    if not frags:
        return [target, olddef]
    return [target, [merge, "-m", "-O", str(objdir), str(objdir / ".config"), *frags], olddef]


def _target_hint(srctree: Path, config_set: ConfigSet) -> str:
    configs = sorted(p.name for p in (srctree / "arch/arm64/configs").glob("*_defconfig"))
    return f"config targets of this tree for arm64: allnoconfig, defconfig, tinyconfig, {', '.join(configs) or '(no *_defconfig files)'}"


def explain_dropped(srctree: Path, final_text: str, dropped: list[DroppedOption]) -> list[DroppedOption]:
    """Each dropped option with the unmet dependency named from the tree's own Kconfig."""
    tree = KconfigTree(srctree)
    final, _ = parse_config_text(final_text)
    out = []
    for d in dropped:
        e = explain(tree, d.option, final)
        out.append(dataclasses.replace(d, why=e.text, fix=e.fix))
    return out


def dropped_error(config_set: ConfigSet, dropped: list[DroppedOption]) -> OptionsDropped:
    details = "\n".join(f"  - {d}" for d in dropped)
    fixes = list(dict.fromkeys(f for d in dropped for f in d.fix))
    own = {o for d in dropped for o in [d.option]}
    fixes = [f for f in fixes if f.split("=", 1)[0] not in own] or fixes
    if fixes:
        hint = (f"add {' and '.join(repr(f) for f in fixes)} to a fragment of config set {config_set.name!r} "
                f"(e.g. {config_set.fragments[-1].path}), or drop the options that cannot be met")
    else:
        hint = "enable the options they depend on in a fragment (`make menuconfig`, search for the option: 'Depends on')"
    return OptionsDropped(
        f"config set {config_set.name!r}: {len(dropped)} requested option(s) not in the final .config:\n{details}",
        hint=hint)
