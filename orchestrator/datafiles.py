"""One loader for the project's YAML data files.

Matrices, machine shapes, workloads, tracepoint sets, crash patterns,
expectations, variants and config sets are all read here: the YAML is
composed into nodes (so every value keeps its line) and walked against a
small declarative schema of its kind.  A problem is a UserError that says
`file:line: key: what was expected`, the closest known name and how to fix
it; never a traceback.  What only a loader knows (a patch file exists, a
metric name is real) it checks itself and reports with Document.error(),
which locates the key the same way.

    doc = datafiles.load(path, Mapping({"vcpus": Field(Int(1, 64), required=True)}), what="machine shape")
    doc.data["vcpus"]                            # plain Python values
    raise doc.error(("vcpus",), "too many for this host", hint="use 4")
"""
from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
import yaml.constructor

from orchestrator.errors import UserError, did_you_mean, nearest
from orchestrator.paths import safe_name

KeyPath = tuple[str | int, ...]
MAX_BYTES = 1_000_000  # data files are short; a bigger one is a mistake (or hostile)
MAX_VALUES = 200_000  # values walked, aliases counted each time: a YAML bomb stops here
_NO_DEFAULT = object()


def render(at: KeyPath) -> str:
    """('workloads', 1, 'params') -> 'workloads[1].params'."""
    out = ""
    for part in at:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def shown(node: yaml.Node) -> str:
    """A value as an error message shows it: scalars as written, collections by kind."""
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    value = yaml.constructor.SafeConstructor().construct_object(node)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def closest(word: object, known: Sequence[str]) -> str:
    """' (closest: 'lower')' for a value near a known one, else ''."""
    near = nearest(str(word), known, cutoff=0.5)
    return f" (closest: {near!r})" if near else ""


# -- how errors are worded ----------------------------------------------------------------

class Wording:
    """How a kind words its errors; `file:line: ` comes first in all of them.

    The default names the key in the location (`m.yaml:3: repeats: expected an
    integer`), as matrix files always did.  A kind whose messages were worded
    otherwise keeps its wording with a subclass (tests and users rely on it).
    """

    def subject(self, at: KeyPath) -> str:
        return render(at)

    def say(self, at: KeyPath, text: str) -> str:
        subject = self.subject(at)
        return f"{subject}: {text}" if subject else text

    def unknown_key(self, at: KeyPath, key: str, known: Sequence[str], noun: str) -> str:
        """`at` is the mapping holding `key`."""
        return self.say((*at, key), f"unknown {noun}{did_you_mean(key, known)}; allowed: {', '.join(known)}")

    def missing(self, at: KeyPath, keys: dict[str, str], noun: str) -> str:
        """`keys`: missing name -> its description."""
        return self.say(at, f"missing {', '.join(keys)}")

    def wrong_type(self, at: KeyPath, got: str, expected: str) -> str:
        return self.say(at, f"expected {expected}, got {got}")

    def bad_value(self, at: KeyPath, got: str, expected: str, suggestion: str) -> str:
        return self.say(at, f"got {got}, expected {expected}{suggestion}")


class KeyNamedInText(Wording):
    """`patterns[0]: unknown key 'frame' (did you mean 'frames'?)`: the mapping in
    the location, the key in the text (crash patterns, config sets, machine shapes)."""

    def unknown_key(self, at: KeyPath, key: str, known: Sequence[str], noun: str) -> str:
        return self.say(at, f"unknown {noun} {key!r}{did_you_mean(key, known)}; allowed: {', '.join(known)}")


DEFAULT_WORDING = Wording()


# -- the schema ---------------------------------------------------------------------------

class Schema(Protocol):
    """What every schema class has; Scalar, List, Mapping and MapOf also say which
    YAML node kind they read (`node_kind`), which is how OneOf picks among them."""
    expected: str  # what a value must be, for messages: "a list of patch file names"

    def walk(self, doc: Document, node: yaml.Node, at: KeyPath) -> Any: ...


@dataclass(frozen=True, kw_only=True)
class Scalar:
    """Any single value (string, number, true/false, null) as YAML reads it."""
    expected: str = "a single value"
    hint: str | None = None
    node_kind = yaml.ScalarNode

    def walk(self, doc: Document, node: yaml.Node, at: KeyPath) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise doc.wrong_type(node, at, self.expected, self.hint)
        return self.checked(doc, node, at, doc.construct(node))

    def checked(self, doc: Document, node: yaml.Node, at: KeyPath, value: Any) -> Any:
        return value


@dataclass(frozen=True, kw_only=True)
class Str(Scalar):
    """A string; optionally one of `choices`, or matching `pattern` (described by `matching`)."""
    expected: str = "a string"
    choices: tuple[str, ...] = ()
    pattern: str | None = None  # re.fullmatch
    matching: str = ""  # what an allowed value looks like, e.g. "a config target" (default: the choices or pattern)
    numbers_as_text: bool = False  # `gic_version: 3` is the string "3"

    def checked(self, doc: Document, node: yaml.Node, at: KeyPath, value: Any) -> Any:
        if self.numbers_as_text and isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise doc.wrong_type(node, at, self.expected, self.hint)
        if self.choices and value not in self.choices:
            raise doc.bad_value(node, at, repr(value), self.matching or self.one_of(), closest(value, self.choices),
                                self.hint or f"use one of: {', '.join(self.choices)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise doc.bad_value(node, at, repr(value), self.matching or f"a string matching {self.pattern}", "",
                                self.hint)
        return value

    def one_of(self) -> str:
        return f"one of {', '.join(self.choices)}"


@dataclass(frozen=True, kw_only=True)
class Regex(Str):
    """A Python regular expression; the value is the compiled pattern."""
    expected: str = "a regular expression (string)"

    def checked(self, doc: Document, node: yaml.Node, at: KeyPath, value: Any) -> Any:
        text = super().checked(doc, node, at, value)
        try:
            return re.compile(text)
        except re.error as exc:
            raise doc.error(at, f"bad regular expression {text!r}: {exc}",
                            hint=self.hint or "fix the regular expression (Python re syntax)") from None


@dataclass(frozen=True, kw_only=True)
class Int(Scalar):
    """An integer (not true/false), optionally within [minimum, maximum]."""
    minimum: int | None = field(default=None, kw_only=False)
    maximum: int | None = field(default=None, kw_only=False)
    expected: str = "an integer"

    def checked(self, doc: Document, node: yaml.Node, at: KeyPath, value: Any) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            raise doc.wrong_type(node, at, self.expected, self.hint)
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise doc.bad_value(node, at, repr(value), self.range(), "", self.hint)
        return value

    def range(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"an integer from {self.minimum} to {self.maximum}"
        if self.minimum is not None:
            return f"an integer >= {self.minimum}"
        return f"an integer <= {self.maximum}"


@dataclass(frozen=True, kw_only=True)
class Bool(Scalar):
    expected: str = "true or false"

    def checked(self, doc: Document, node: yaml.Node, at: KeyPath, value: Any) -> Any:
        if not isinstance(value, bool):
            raise doc.wrong_type(node, at, self.expected, self.hint)
        return value


@dataclass(frozen=True)
class List:
    """A list of `items`.  An item of the wrong type is reported as the list's
    mistake ("must be a list of patch file names"): one expectation, one line."""
    items: Any  # a Schema
    expected: str = "a list"
    min_items: int = 0
    max_items: int | None = None
    hint: str | None = None
    node_kind = yaml.SequenceNode

    def walk(self, doc: Document, node: yaml.Node, at: KeyPath) -> Any:
        if _is_null(node) and self.min_items == 0:
            return []  # `events:` with nothing after it
        if not isinstance(node, yaml.SequenceNode):
            raise doc.wrong_type(node, at, self.expected, self.hint)
        if len(node.value) < self.min_items or (self.max_items is not None and len(node.value) > self.max_items):
            raise doc.wrong_type(node, at, self.expected, self.hint)
        scalar_items = getattr(self.items, "node_kind", None) is yaml.ScalarNode
        out = []
        for i, item in enumerate(node.value):
            if scalar_items and not isinstance(item, yaml.ScalarNode):
                raise doc.fail(item, doc.wording.wrong_type(at, f"{shown(item)} at [{i}]", self.expected),
                               self.hint or f"write {self.expected} there")
            out.append(doc.walk(self.items, item, (*at, i)))
        return out


@dataclass(frozen=True)
class Field:
    schema: Any  # a Schema
    required: bool = False
    help: str = ""  # one line for "allowed:" hints
    default: Any = _NO_DEFAULT  # filled in when the key is absent (or null)


@dataclass(frozen=True)
class Mapping:
    """A mapping with known keys.  A key given as null counts as absent."""
    fields: dict[str, Field]
    expected: str = "a mapping"
    noun: str = "key"  # "field" in some files
    hint: str | None = None
    node_kind = yaml.MappingNode

    def walk(self, doc: Document, node: yaml.Node, at: KeyPath) -> Any:
        if not isinstance(node, yaml.MappingNode):
            raise doc.wrong_type(node, at, self.expected, self.hint)
        entries = doc.entries(node, at)
        for key, key_node, _ in entries:
            if key not in self.fields:
                raise doc.fail(key_node, doc.wording.unknown_key(at, key, list(self.fields), self.noun),
                               self.hint or self.allowed())
        present = {key: value for key, _, value in entries if not _is_null(value)}
        missing = {k: f.help for k, f in self.fields.items() if f.required and k not in present}
        if missing:
            raise doc.fail(node, doc.wording.missing(at, missing, self.noun),
                           self.hint or "add " + "; ".join(f"{k} ({h})" if h else k for k, h in missing.items()))
        out = {}
        for key, value in present.items():
            out[key] = doc.walk(self.fields[key].schema, value, (*at, key))
        for key, f in self.fields.items():
            if key not in out and f.default is not _NO_DEFAULT:
                out[key] = f.default
        return out

    def allowed(self) -> str:
        return f"{self.noun}s: " + "; ".join(f"{k} ({f.help})" if f.help else k for k, f in self.fields.items())


@dataclass(frozen=True)
class MapOf:
    """A mapping of names (any, or matching `keys`) to `values`."""
    values: Any  # a Schema
    keys: Str = Str(expected="a name")
    expected: str = "a mapping"
    hint: str | None = None
    node_kind = yaml.MappingNode

    def walk(self, doc: Document, node: yaml.Node, at: KeyPath) -> Any:
        if _is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise doc.wrong_type(node, at, self.expected, self.hint)
        out = {}
        for key, key_node, value in doc.entries(node, at):
            self.keys.checked(doc, key_node, (*at, key), key)
            out[key] = doc.walk(self.values, value, (*at, key))
        return out


@dataclass(frozen=True)
class OneOf:
    """One of several shapes that differ in kind (a scalar, a list or a mapping):
    the node's kind picks the alternative, whose own errors are then reported."""
    alternatives: tuple[Any, ...]  # Schemas
    expected: str
    hint: str | None = None

    def __post_init__(self) -> None:
        kinds = [a.node_kind for a in self.alternatives]
        assert len(kinds) == len(set(kinds)), "OneOf alternatives must differ in node kind"

    def walk(self, doc: Document, node: yaml.Node, at: KeyPath) -> Any:
        for alternative in self.alternatives:
            if isinstance(node, alternative.node_kind):
                return alternative.walk(doc, node, at)
        raise doc.wrong_type(node, at, self.expected, self.hint)


@dataclass(frozen=True)
class Later:
    """Any value, checked later with Document.check (a config set is checked
    when it is used, so one bad set does not break the others)."""
    expected: str = "a value"

    def walk(self, doc: Document, node: yaml.Node, at: KeyPath) -> Any:
        return doc.construct(node)


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


# -- documents ----------------------------------------------------------------------------

@dataclass
class Document:
    """A loaded data file: `data` as plain Python values, and where each value was."""
    path: Path
    wording: Wording = DEFAULT_WORDING
    data: Any = None
    _nodes: dict[KeyPath, yaml.Node] = field(default_factory=dict, repr=False)
    _walked: int = 0
    _constructor: yaml.constructor.SafeConstructor = field(default_factory=yaml.constructor.SafeConstructor, repr=False)

    def line(self, at: KeyPath) -> int:
        """1-based line of the value at `at` (or of the nearest enclosing value that was read)."""
        for n in range(len(at), -1, -1):
            if at[:n] in self._nodes:
                return self._nodes[at[:n]].start_mark.line + 1
        return 1

    def error(self, at: KeyPath, text: str, hint: str | None = None, *, subject: str | None = None) -> UserError:
        """`file:line: key: text` for a problem a loader found in a value it read."""
        subject = self.wording.subject(at) if subject is None else subject
        return UserError(f"{self.path}:{self.line(at)}: {subject}: {text}" if subject
                         else f"{self.path}:{self.line(at)}: {text}", hint=hint)

    def check(self, at: KeyPath, schema: Any) -> Any:
        """The value at `at` (read with Later) checked against `schema` now."""
        return self.walk(schema, self._nodes[at], at)

    # -- used by the schema classes
    def walk(self, schema: Any, node: yaml.Node, at: KeyPath) -> Any:
        self._walked += 1
        if self._walked > MAX_VALUES:
            raise UserError(f"{self.path}: more than {MAX_VALUES} values (YAML aliases expanded)",
                            hint="write the values out instead of repeating aliases")
        self._nodes[at] = node
        return schema.walk(self, node, at)

    def construct(self, node: yaml.Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def entries(self, node: yaml.MappingNode, at: KeyPath) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """(key, key node, value node) of a mapping, merge keys (<<) resolved."""
        try:
            self._constructor.flatten_mapping(node)
        except yaml.constructor.ConstructorError as exc:
            raise self.fail(node, self.wording.say(at, f"bad merge key (<<): {exc.problem}")) from None
        out = []
        for key_node, value in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, self.wording.say(at, "keys must be names, not lists or mappings"))
            self._nodes[(*at, str(key_node.value))] = value
            out.append((str(key_node.value), key_node, value))
        return out

    def fail(self, node: yaml.Node, message: str, hint: str | None = None) -> UserError:
        return UserError(f"{self.path}:{node.start_mark.line + 1}: {message}", hint=hint)

    def wrong_type(self, node: yaml.Node, at: KeyPath, expected: str, hint: str | None) -> UserError:
        return self.fail(node, self.wording.wrong_type(at, shown(node), expected),
                         hint or f"write {expected} there")

    def bad_value(self, node: yaml.Node, at: KeyPath, got: str, expected: str, suggestion: str,
                  hint: str | None) -> UserError:
        return self.fail(node, self.wording.bad_value(at, got, expected, suggestion),
                         hint or f"write {expected} there")


def read_text(path: Path, what: str) -> str:
    """The file's text, refused when it is missing or larger than MAX_BYTES."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise UserError(f"{path}: {what} file larger than {MAX_BYTES // 1_000_000} MB",
                            hint=f"a {what} file is a short YAML file")
        return path.read_text(errors="replace")
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


@functools.lru_cache(maxsize=64)
def compose(path: Path, text: str, what: str, *, allow_aliases: bool = True) -> yaml.Node | None:
    """The YAML node tree of `text` (None for an empty file); syntax errors name their line.

    Cached by the text itself: reports load the same few files (sets.yaml,
    machine shapes, workloads) for every record after every cell, and
    composing is nearly all of a load's cost.  Walking a tree does not change
    it (merge keys are flattened once, the same way each time), so documents
    may share one; each still constructs its own values."""
    try:
        if not allow_aliases:
            for event in yaml.parse(text, Loader=yaml.SafeLoader):
                if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                    raise UserError(f"{path}:{event.start_mark.line + 1}: YAML anchors/aliases are not allowed in "
                                    f"{what} files", hint="write the values out")
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise UserError(f"{where}: not valid YAML: {problem}",
                        hint="fix the YAML syntax there (indentation, quotes, brackets, a ':' after each key)") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None


def load(path: Path, schema: Any, *, what: str, wording: Wording = DEFAULT_WORDING,
         allow_aliases: bool = True) -> Document:
    """Read `path` and check it against `schema`; an empty file is an empty mapping."""
    path = Path(path)
    root = compose(path, read_text(path, what), what, allow_aliases=allow_aliases)
    if root is None:
        root = yaml.MappingNode("tag:yaml.org,2002:map", [], start_mark=yaml.Mark(str(path), 0, 0, 0, None, None))
    doc = Document(path, wording)
    doc.data = doc.walk(schema, root, ())
    return doc


def read_data(path: Path, what: str) -> Any:
    """Plain values of a YAML file without a schema (for readers that only glance at it)."""
    root = compose(path, read_text(path, what), what)
    return None if root is None else Document(path).construct(root)


def named_file(directory: Path, name: str, *, what: str, plural: str) -> Path:
    """`directory/NAME.yaml` for a data file named by the user (a workload, a
    tracepoint set); an unknown name is an error listing the known ones."""
    safe_name(name, what=f"{what} name")
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml"))
        raise UserError(f"unknown {what} {name!r}{did_you_mean(name, known)}",
                        hint=f"known {plural}: {', '.join(known)} (in {directory})")
    return path
