"""Why did olddefconfig drop an option?  Read the tree's own Kconfig files.

kconfiglib (14.1, its last release) cannot parse current trees, so this reads
only what an explanation needs: for each `config SYMBOL` / `menuconfig SYMBOL`
block, its `depends on` lines plus the conditions of the enclosing `if` and
`menu ... depends on` (inherited through `source`), whether it has a prompt,
and which blocks `select` it.  Expressions are evaluated against the final
.config with Kconfig's tristate rules (n=0 < m=1 < y=2; && is min, || max,
! is 2-x), as `make menuconfig` shows them: "MODULES [=n]".
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_TOKEN = re.compile(r'\s*(&&|\|\||!=|<=|>=|[!()=<>]|"[^"]*"|\'[^\']*\'|\$\([^)]*\)|[A-Za-z0-9_.-]+)')
_SOURCE = re.compile(r'^(o?r?source)\s+"?([^"\s]+)"?')
_ENTRY = re.compile(r"^(config|menuconfig)\s+([A-Za-z0-9_]+)\s*$")
_PROMPT = re.compile(r'^(bool|tristate|string|int|hex|prompt)\s+["\']')
_COMMENT = re.compile(r'#(?=(?:[^"]*"[^"]*")*[^"]*$).*$')  # a '#' outside quotes
_SELECT = re.compile(r"^(select|imply)\s+([A-Za-z0-9_]+)(?:\s+if\s+(.*))?$")


@dataclass
class Condition:
    expr: str
    where: str  # file:line of the `depends on` / `if` / `menu`


@dataclass
class SymbolInfo:
    name: str
    defined_at: list[str] = field(default_factory=list)
    depends: list[Condition] = field(default_factory=list)
    has_prompt: bool = False
    selected_by: list[tuple[str, str | None]] = field(default_factory=list)  # (symbol, its `if` condition)


def _indent(line: str) -> int:
    return len(line.expandtabs(8)) - len(line.expandtabs(8).lstrip())


class KconfigTree:
    """The symbols of one source tree for one architecture (SRCARCH)."""

    def __init__(self, srctree: Path, srcarch: str = "arm64") -> None:
        self.srctree, self.srcarch = srctree, srcarch
        self.symbols: dict[str, SymbolInfo] = {}
        self._seen: set[Path] = set()
        top = srctree / "Kconfig"
        if top.is_file():
            self._parse(top, [])

    def _resolve(self, kind: str, arg: str, current: Path) -> list[Path]:
        arg = arg.replace("$(SRCARCH)", self.srcarch).replace("$SRCARCH", self.srcarch)
        base = current.parent if kind.endswith("rsource") else self.srctree
        return sorted(base.glob(arg)) if any(c in arg for c in "*?[") else [base / arg]

    def _parse(self, path: Path, inherited: list[Condition]) -> None:
        if path in self._seen or not path.is_file():
            return
        self._seen.add(path)
        rel = str(path.relative_to(self.srctree))
        # Frames: ("if", [cond]) or ("menu", [conds]); the innermost open entry gets `depends on`.
        frames: list[tuple[str, list[Condition]]] = []
        entry: SymbolInfo | None = None
        menu_open = False  # `depends on` right after `menu` belongs to the menu
        lines = path.read_text(errors="replace").splitlines()
        i = 0
        while i < len(lines):
            lineno, line = i + 1, lines[i]
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1] + " " + lines[i]
            i += 1
            s = _COMMENT.sub("", line).strip()
            if not s:
                continue
            if s in ("help", "---help---"):
                # Help text: every following line indented deeper (or blank).
                indent = _indent(line)
                while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
                    i += 1
                continue
            where = f"{rel}:{lineno}"
            word = s.split()[0]
            context = inherited + [c for _, conds in frames for c in conds]
            if m := _ENTRY.match(s):
                sym = self.symbols.setdefault(m.group(2), SymbolInfo(m.group(2)))
                sym.defined_at.append(where)
                sym.depends.extend(context)
                entry, menu_open = sym, False
            elif m := _SOURCE.match(s):
                entry = None
                for p in self._resolve(m.group(1), m.group(2), path):
                    self._parse(p, context)
            elif word == "if":
                frames.append(("if", [Condition(s[2:].strip(), where)]))
                entry = None
            elif word in ("menu", "choice"):
                frames.append((word, []))
                entry, menu_open = None, True
            elif word in ("endif", "endmenu", "endchoice"):
                if frames:
                    frames.pop()
                entry, menu_open = None, False
            elif word in ("comment", "mainmenu"):
                entry, menu_open = None, False
            elif s.startswith("depends on"):
                cond = Condition(s[len("depends on"):].strip(), where)
                if entry is not None:
                    entry.depends.append(cond)
                elif menu_open and frames:
                    frames[-1][1].append(cond)
            elif entry is not None and (m := _SELECT.match(s)):
                target = self.symbols.setdefault(m.group(2), SymbolInfo(m.group(2)))
                target.selected_by.append((entry.name, m.group(3)))
            elif entry is not None and _PROMPT.match(s):
                entry.has_prompt = True


# ---------------------------------------------------------------- evaluation

def _value(sym: str, config: dict[str, str]) -> str:
    v = config.get(f"CONFIG_{sym}", "n") or "n"
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] == '"' else v  # .config quotes strings


def _tri(v: str) -> int:
    return {"y": 2, "m": 1}.get(v, 0)


def evaluate(expr: str, config: dict[str, str]) -> int | None:
    """Tristate value (0/1/2) of a Kconfig expression, or None if it cannot be read."""
    tokens = _TOKEN.findall(expr)
    if "".join(tokens).replace(" ", "") != expr.replace(" ", "").replace("\t", ""):
        return None
    pos = [0]

    def peek() -> str | None:
        return tokens[pos[0]] if pos[0] < len(tokens) else None

    def take() -> str:
        pos[0] += 1
        return tokens[pos[0] - 1]

    def atom_value(tok: str) -> str:
        if tok[:1] in "\"'":
            return tok[1:-1]
        if tok in ("y", "m", "n") or not re.match(r"^[A-Za-z0-9_]+$", tok) or tok.isdigit():
            return tok
        return _value(tok, config)

    def primary() -> int:
        tok = take()
        if tok == "!":
            return 2 - primary()
        if tok == "(":
            v = disj()
            if take() != ")":
                raise ValueError
            return v
        if tok.startswith("$("):
            raise ValueError  # a macro: not ours to expand
        if peek() in ("=", "!=", "<", ">", "<=", ">="):
            op, rhs = take(), atom_value(take())
            lhs = atom_value(tok)
            if op in ("=", "!="):
                return 2 if (lhs == rhs) == (op == "=") else 0
            try:
                a, b = int(lhs, 0), int(rhs, 0)
            except ValueError:
                a, b = lhs, rhs  # type: ignore[assignment]
            return 2 if {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op] else 0
        return _tri(atom_value(tok))

    def conj() -> int:
        v = primary()
        while peek() == "&&":
            take()
            v = min(v, primary())
        return v

    def disj() -> int:
        v = conj()
        while peek() == "||":
            take()
            v = max(v, conj())
        return v

    try:
        v = disj()
        return v if pos[0] == len(tokens) else None
    except (ValueError, IndexError, KeyError):
        return None


def annotate(expr: str, config: dict[str, str]) -> str:
    """`MODULES && HAVE_KPROBES` -> `MODULES [=n] && HAVE_KPROBES [=y]` (menuconfig's style)."""
    def sub(m: re.Match) -> str:
        tok = m.group(0)
        if tok in ("y", "m", "n") or tok.isdigit() or tok.startswith("0x"):
            return tok
        return f"{tok} [={_value(tok, config)}]"
    out, last = [], 0
    for m in re.finditer(r'"[^"]*"|\$\([^)]*\)|\b[A-Za-z_][A-Za-z0-9_]*\b', expr):
        out.append(expr[last:m.start()])
        out.append(m.group(0) if m.group(0)[0] in '"$' else sub(m))
        last = m.end()
    out.append(expr[last:])
    return "".join(out)


def _fix_lines(tree: "KconfigTree", expr: str, config: dict[str, str]) -> list[str]:
    """Fragment lines that would satisfy a simple unmet expression: the symbols
    that are off, not negated, and settable (have a prompt); of `A || B` only
    the first alternative."""
    alternatives = [a for a in re.split(r"\|\|(?![^(]*\))", expr) if a.strip()]
    fixes = []
    for m in re.finditer(r"(!?)\b([A-Z][A-Z0-9_]*)\b(\s*(!=|=|<|>))?", alternatives[0] if alternatives else expr):
        if m.group(1) or m.group(3):
            continue
        sym = tree.symbols.get(m.group(2))
        if _value(m.group(2), config) == "n" and sym is not None and sym.has_prompt:
            fixes.append(f"CONFIG_{m.group(2)}=y")
    return fixes


@dataclass(frozen=True)
class Explanation:
    text: str  # "KPROBES depends on MODULES [=n] (arch/Kconfig:43)"
    fix: tuple[str, ...]  # fragment lines that would fix it


def explain(tree: KconfigTree, option: str, config: dict[str, str]) -> Explanation:
    """Why CONFIG_<option> is not set as requested in `config` (the final .config)."""
    name = option.removeprefix("CONFIG_")
    info = tree.symbols.get(name)
    if info is None or not info.defined_at:
        return Explanation(f"{name} is not defined by any Kconfig file of this tree (for {tree.srcarch})", ())
    unmet = [c for c in info.depends if evaluate(c.expr, config) == 0]
    if unmet:
        parts = [f"{name} depends on {annotate(c.expr, config)} ({c.where})" for c in unmet]
        fixes = tuple(dict.fromkeys(f for c in unmet for f in _fix_lines(tree, c.expr, config)))
        return Explanation("; ".join(parts), fixes)
    if not info.has_prompt:
        sel = [f"{s} [={_value(s, config)}]" + (f" if {annotate(c, config)}" if c else "") for s, c in info.selected_by]
        text = f"{name} has no prompt ({info.defined_at[0]}): a fragment cannot set it"
        if sel:
            text += "; it is selected by " + ", ".join(sel[:8]) + (" ..." if len(sel) > 8 else "")
        fixes = tuple(f"CONFIG_{s}=y" for s, _ in info.selected_by[:1] if _value(s, config) == "n")
        return Explanation(text, fixes)
    deps = " && ".join(f"({annotate(c.expr, config)})" for c in info.depends) or "nothing"
    return Explanation(f"{name} ({info.defined_at[0]}) depends on {deps}, all met: another option or a "
                       "`choice` overrides it", ())
