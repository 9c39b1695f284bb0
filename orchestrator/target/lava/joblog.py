"""Reading a LAVA job log (pure: text in, data out).

A job log is one YAML mapping per line, `{dt: ..., lvl: ..., msg: ...}`
(lava-run writes them to stderr; a server's raw log prefixes each with "- ").
Parse them as YAML, not JSON: some values look like `! "366"`.  What we read:
- `lvl: results`: one test case each, `{definition, case, result,
  measurement, units, ...}`; LAVA's own suite is `definition: lava` (its
  `job` case says how the job ended, with error_type and error_msg);
- `lvl: target`: what the guest printed, one line each, where guest_lib.sh's
  marker lines and gzip+base64 blocks are (kernel messages that landed
  inside a block are dropped; each block's sha256 says whether it came
  through whole);
- `lvl: error` / `lvl: exception`: the dispatcher's own complaints.
"""
from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import yaml

_STATUS = re.compile(r"ORCH-LAVA-STATUS (?P<n>\d+) status=(?P<status>[a-z-]+) rc=(?P<rc>-|\d+) "
                     r"seconds=(?P<seconds>[0-9.]+)")
_BEGIN = re.compile(r"ORCH-LAVA-BEGIN (?P<n>\d+) (?P<what>\S+)\s*$")
_END = re.compile(r"ORCH-LAVA-END (?P<n>\d+) (?P<what>\S+) bytes=(?P<bytes>\d+) sha256=(?P<sha>[0-9a-f]{64})")
_MISSING = re.compile(r"ORCH-LAVA-MISSING (?P<n>\d+) (?P<what>\S+)")
# A kernel message that landed in the middle of a line ("[   12.345678] ..."),
# to the end of that line (LAVA splits the log into lines at "\n").
_KMSG = re.compile(r"\[\s*\d+\.\d+\].*$")
_B64 = re.compile(r"^[A-Za-z0-9+/=]+$")
# What LAVA leaves of terminal escapes after dropping ESC (busybox's "\e[6n").
_ESC_REST = re.compile(r"^(\[\d*(;\d+)*[A-Za-z])+")


@dataclass(frozen=True)
class CaseResult:
    definition: str
    case: str
    result: str  # pass | fail | skip | unknown
    measurement: float | None = None
    units: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # error_msg, error_type, duration, ...


@dataclass(frozen=True)
class StatusLine:
    index: int
    status: str  # pass | fail | timeout | not-run (guest_lib.sh orch_run)
    exit_status: int | None
    seconds: float


@dataclass(frozen=True)
class Block:
    index: int  # the script
    what: str  # "output" or the evidence file's guest path
    data: bytes | None  # None when the block did not come through whole
    problem: str = ""  # "" | why data is None ("cut off: no end marker", "sha256 mismatch", ...)


@dataclass
class JobLog:
    results: list[CaseResult] = field(default_factory=list)
    statuses: dict[int, StatusLine] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)
    missing: dict[int, list[str]] = field(default_factory=dict)  # script -> evidence paths it did not leave
    errors: list[str] = field(default_factory=list)  # lvl error / exception messages
    target_lines: list[str] = field(default_factory=list)
    unparsed: int = 0  # lines that were not a log record (tracebacks, warnings)
    last_lines: list[str] = field(default_factory=list)  # the log's end, as text, for excerpts

    def job_result(self) -> CaseResult | None:
        """LAVA's verdict on the job itself (definition lava, case job)."""
        return next((r for r in reversed(self.results) if r.definition == "lava" and r.case == "job"), None)

    def cases(self, definition_suffix: str) -> dict[str, CaseResult]:
        """Test cases of the inline definition (LAVA names it "<n>_<name>")."""
        return {r.case: r for r in self.results
                if r.definition == definition_suffix or r.definition.endswith("_" + definition_suffix)}

    def lava_case(self, case: str) -> CaseResult | None:
        return next((r for r in self.results if r.definition == "lava" and r.case == case), None)

    def block(self, index: int, what: str) -> Block | None:
        return next((b for b in self.blocks if b.index == index and b.what == what), None)


def _record(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if text.startswith("- "):
        text = text[2:]
    if not text.startswith("{"):
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) and "lvl" in data else None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _case(msg: dict[str, Any]) -> CaseResult:
    known = {"definition", "case", "result", "measurement", "units"}
    return CaseResult(str(msg.get("definition", "")), str(msg.get("case", "")), str(msg.get("result", "unknown")),
                      _float(msg.get("measurement")), str(msg.get("units", "") or ""),
                      {k: v for k, v in msg.items() if k not in known})


def _decode(index: int, what: str, lines: list[str], end: re.Match[str] | None) -> Block:
    if end is None:
        return Block(index, what, None, "cut off: the log ends before the block's end marker")
    chunks = []
    for raw in lines:
        text = _KMSG.sub("", raw).strip()
        if text and _B64.match(text):
            chunks.append(text)
    try:
        data = gzip.decompress(base64.b64decode("".join(chunks)))
    except (binascii.Error, OSError, EOFError, zlib.error) as exc:
        return Block(index, what, None, f"cannot decode: {exc}")
    if len(data) != int(end["bytes"]) or hashlib.sha256(data).hexdigest() != end["sha"]:
        return Block(index, what, None, f"damaged: {len(data)} bytes decoded, {end['bytes']} sent, sha256 differs")
    return Block(index, what, data)


def _guest_text(msg: Any) -> str:
    # LAVA escapes double quotes for YAML when it logs a target line (shell.py ShellLogger).
    return _ESC_REST.sub("", str(msg).replace('\\"', '"'))


def parse_job_log(text: str, *, keep_last: int = 60) -> JobLog:
    log = JobLog()
    open_block: tuple[int, str, list[str]] | None = None
    for line in text.splitlines():
        rec = _record(line)
        if rec is None:
            if line.strip():
                log.unparsed += 1
                log.last_lines.append(line)
            continue
        lvl, msg = str(rec.get("lvl")), rec.get("msg")
        if lvl == "results" and isinstance(msg, dict):
            # When it was logged (extra["dt"]): LAVA's durations leave out waits between actions.
            log.results.append(_case({**msg, "dt": rec.get("dt")} if rec.get("dt") else msg))
        elif lvl in ("error", "exception"):
            log.errors.append(str(msg))
        if lvl != "results":
            log.last_lines.append(_guest_text(msg) if lvl == "target" else f"{lvl}: {msg}")
        if lvl != "target":
            continue
        guest = _guest_text(msg)
        log.target_lines.append(guest)
        if guest.startswith("+ "):  # the shell's trace of a command, not its output
            continue
        if open_block is not None:
            n, what, body = open_block
            end = _END.search(guest)
            if end and int(end["n"]) == n and end["what"] == what:
                log.blocks.append(_decode(n, what, body, end))
                open_block = None
            elif _BEGIN.search(guest) or _STATUS.search(guest):
                log.blocks.append(_decode(n, what, body, None))  # a new block began: this one was cut
                open_block = None
            else:
                body.append(guest)
                continue
        if m := _BEGIN.search(guest):
            open_block = (int(m["n"]), m["what"], [])
        elif m := _STATUS.search(guest):
            log.statuses[int(m["n"])] = StatusLine(int(m["n"]), m["status"],
                                                   None if m["rc"] == "-" else int(m["rc"]), float(m["seconds"]))
        elif m := _MISSING.search(guest):
            log.missing.setdefault(int(m["n"]), []).append(m["what"])
    if open_block is not None:
        n, what, body = open_block
        log.blocks.append(_decode(n, what, body, None))
    log.last_lines = log.last_lines[-keep_last:]
    return log
