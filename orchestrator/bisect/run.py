"""A bisection end to end: confirm the base passes and the whole series
fails, binary-search the prefixes in between, verify the answer by running
the prefixes before and at it again, write the report.

Each step (one prefix, with its repeats) is appended to bisect.json as soon
as it is known, and every run is on disk (runner.py), so Ctrl-C loses at
most the run in progress: the same command again replays the finished runs
from disk and goes on where it stopped."""
from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator import proc
from orchestrator.atomic import write_json_atomic
from orchestrator.bisect.checks import BAD, GOOD, SKIP, Check, Verdict, judge
from orchestrator.bisect.runner import PrefixRunner, Run, Target
from orchestrator.bisect.search import MODES, bisect_prefixes, fold
from orchestrator.errors import UserError
from orchestrator.reports.results import CellRecord

# (prefix, repeat, verdict) -> verdict: lets a test inject a flaky result the
# kernel cannot be made to produce on demand.  None in real use.
VerdictHook = Callable[[int, int, Verdict], Verdict]


@dataclass
class BisectRequest:
    target: Target
    check: Check
    out: Path  # the bisection's directory; runs/ in it is shared by every check of this target
    repeats: int = 1
    mode: str = "majority"
    good: int = 0
    bad: int | None = None  # default: the whole series
    verify: bool = True
    exhaustive: bool = False  # also run every other prefix: the cost a bisection saves, measured

    def reproducer(self) -> str:
        t = self.target
        argv = ["orchestrator", "bisect", "--series", str(t.series)]
        if t.source:
            argv += ["--source", t.source]
        if t.variant:
            argv += ["--variant", t.variant]
        argv += ["--config-set", t.config_set, "--machine", t.machine, "--workload", t.workload]
        argv += [a for k, v in t.params for a in ("--param", f"{k}={v}")]
        argv += ["--check", self.check.text]
        if self.repeats > 1:
            argv += ["--repeats", str(self.repeats), "--mode", self.mode]
        if self.good:
            argv += ["--good", str(self.good)]
        if self.bad is not None:
            argv += ["--bad", str(self.bad)]
        return shlex.join(argv + ["--out", str(self.out)])


@dataclass
class StepResult:
    phase: str  # confirm-good | confirm-bad | search | verify-good | verify-bad | exhaustive
    prefix: int
    verdict: str  # good | bad | skip
    votes: list[str]  # one per run, in order
    evidence: list[str]  # one per run
    seconds: float  # wall time of this step's runs in this invocation (0 when replayed from disk)
    run_seconds: float  # the runs' own time, as measured when they ran
    runs: list[dict] = field(default_factory=list)  # {dir, repeat, seconds, build_s, build_cost_s, cache_hit}
    reused: bool = False  # every run was already on disk (an earlier step, check or invocation ran it)


@dataclass
class BisectResult:
    check: str
    target: dict
    reproducer: str
    patches: list[dict]  # {number, name, subject, author, message_id}
    state: str = "running"  # running | interrupted | found | ambiguous | base-fails | series-passes | untestable
    first_bad: int | None = None
    candidates: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    verified: bool | None = None
    steps: list[StepResult] = field(default_factory=list)
    wall_s: float = 0.0
    exhaustive_s: float | None = None  # every prefix built and run once (measured in this run)
    note: str = ""


def patch_info(patches) -> list[dict]:
    from email.parser import HeaderParser
    out = []
    for p in patches:
        head = HeaderParser().parsestr(p.text.split("\n\n", 1)[0].split("\n", 1)[-1])
        subject = re.sub(r"^(\[[^\]]*\]\s*)+", "", p.subject)  # as git am commits it: no [PATCH n/m]
        out.append({"number": p.index, "name": p.name, "subject": subject,
                    "author": str(head.get("From", "")).strip(), "message_id": str(head.get("Message-Id", "")).strip()})
    return out


class Bisection:
    def __init__(self, req: BisectRequest, hook: VerdictHook | None = None):
        if req.mode not in MODES:
            raise UserError(f"--mode {req.mode!r}: one of {', '.join(MODES)}", hint="--mode majority or --mode any")
        if req.repeats < 1:
            raise UserError(f"--repeats {req.repeats}: at least 1", hint="--repeats 3 for a flaky check")
        self.req = req
        self.hook = hook
        # one report directory per check and way of counting repeats; the runs below are shared
        self.dir = req.out / (req.check.slug + (f"-x{req.repeats}-{req.mode}" if req.repeats > 1 else ""))
        _claim(req.out, req.target)
        self.runner = PrefixRunner(req.target, req.out / "runs")
        self.runner.reproducer = req.reproducer()
        n = len(self.runner.patches)
        self.bad = n if req.bad is None else req.bad
        if not 0 <= req.good < self.bad <= n:
            raise UserError(f"--good {req.good} --bad {self.bad}: need 0 <= good < bad <= {n} (the series has {n} patches)",
                            hint=f"prefix k is the series' first k patches; 0 is the bare source, {n} the whole series")
        self.result = BisectResult(req.check.text, req.target.identity(), req.reproducer(),
                                   patch_info(self.runner.patches))

    # ------------------------------------------------------------ one step
    def step(self, k: int, phase: str, first_repeat: int = 0) -> StepResult:
        votes: list[str] = []
        evidence: list[str] = []
        runs: list[dict] = []
        t0 = time.monotonic()
        verdict = None
        i = first_repeat
        reused = True
        while verdict is None:
            run, rec = self.runner.run(k, i, self.req.check.build_only)
            reused = reused and self.runner.last_cached
            v = judge(self.req.check, rec, self.req.target.workload)
            if self.hook is not None:
                v = self.hook(k, i, v)
            votes.append(v.verdict)
            evidence.append(v.evidence)
            runs.append({"dir": str(self.runner.cell_dir(run).relative_to(self.req.out)), "repeat": i,
                         "seconds": run.seconds, "build_s": run.build_s, "build_cost_s": run.build_cost_s,
                         "cache_hit": run.cache_hit, "verdict": v.verdict})
            i += 1
            verdict = fold(votes, self.req.repeats, self.req.mode)
        replayed = all(r["seconds"] and _replayed(self, r) for r in runs)
        step = StepResult(phase, k, verdict, votes, evidence, 0.0 if replayed else round(time.monotonic() - t0, 2),
                          round(sum(r["seconds"] for r in runs), 2), runs, reused)
        self.result.steps.append(step)
        counts = ", ".join(f"{votes.count(x)} {x}" for x in (BAD, GOOD, SKIP) if votes.count(x))
        _say(f"{phase} prefix {k}: {verdict.upper()} ({counts}) {evidence[-1][:160]}")
        self.save()
        return step

    def save(self) -> None:
        write_json_atomic(self.dir / "bisect.json", asdict(self.result), indent=2, sort_keys=False)

    # ------------------------------------------------------------ the whole
    def run(self) -> BisectResult:
        from orchestrator.bisect.report import write_reports
        self._t0 = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._start_runs = {p.name for p in (self.req.out / "runs").glob("*") if (p / "run.json").is_file()}
        proc.install_signal_handlers()
        r = self.result
        try:
            self._search()
            if self.req.exhaustive:
                self._exhaustive()
        except (KeyboardInterrupt, SystemExit):
            r.state = "interrupted"
            r.note = "interrupted: run the same command again to go on from the last finished run"
            raise
        finally:
            proc.end_all()
            r.wall_s = round(time.monotonic() - self._t0, 2)
            self.save()
            write_reports(self)
        return r

    def _search(self) -> None:
        r, req = self.result, self.req
        g = self.step(req.good, "confirm-good")
        if g.verdict != GOOD:
            r.state = "base-fails" if g.verdict == BAD else "untestable"
            r.note = (f"prefix {req.good} (the base) does not pass the check: {g.evidence[-1]}; nothing to bisect"
                      if g.verdict == BAD else f"prefix {req.good} (the base) cannot be tested: {g.evidence[-1]}")
            return
        b = self.step(self.bad, "confirm-bad")
        if b.verdict != BAD:
            r.state = "series-passes" if b.verdict == GOOD else "untestable"
            r.note = (f"prefix {self.bad} (the whole series) passes the check: {b.evidence[-1]}; nothing to bisect"
                      if b.verdict == GOOD else f"prefix {self.bad} cannot be tested: {b.evidence[-1]}")
            return
        out = bisect_prefixes(req.good, self.bad, lambda k: self.step(k, "search").verdict)
        r.skipped, r.candidates = out.skipped, out.candidates
        if out.first_bad is None:
            r.state = "ambiguous"
            r.note = (f"prefixes {', '.join(map(str, out.skipped))} are untestable: the first bad patch is one of "
                      f"{', '.join(map(str, out.candidates))}")
            return
        r.state, r.first_bad = "found", out.first_bad
        if req.verify:
            # fresh runs (repeat numbers after those the search used), not the search's own records
            fresh = max((x["repeat"] for s in r.steps for x in s.runs), default=0) + 1
            before = self.step(out.first_bad - 1, "verify-good", fresh)
            at = self.step(out.first_bad, "verify-bad", fresh)
            r.verified = before.verdict == GOOD and at.verdict == BAD
            if not r.verified:
                r.note = (f"verification did not reproduce: prefix {out.first_bad - 1} {before.verdict}, "
                          f"prefix {out.first_bad} {at.verdict} (a flaky check? try --repeats 3)")

    def _exhaustive(self) -> None:
        """Every prefix good..bad once: the work a bisection avoids, measured in the same run."""
        for k in range(self.req.good, self.bad + 1):
            self.step(k, "exhaustive")
        r = self.result
        per_prefix: dict[int, dict] = {}
        for s in r.steps:
            for x in s.runs:
                if x["repeat"] == 0:
                    per_prefix.setdefault(s.prefix, x)
        r.exhaustive_s = round(sum(x["build_cost_s"] + max(0.0, x["seconds"] - x["build_s"]) for x in per_prefix.values()), 2)

    def record(self, run_entry: dict) -> CellRecord | None:
        return CellRecord.load(self.req.out / run_entry["dir"])


def _replayed(b: Bisection, entry: dict) -> bool:
    return Path(entry["dir"]).name in b._start_runs


def _claim(out: Path, target: Target) -> None:
    """One target per directory: runs of another series or cell must not be taken for this one's."""
    path = out / "target.json"
    want = target.identity()
    if path.is_file():
        try:
            have = json.loads(path.read_text())
        except ValueError:
            have = None
        if have != want:
            raise UserError(f"{out} holds a bisection of another target ({path}: {have})",
                            hint="give another --out, or delete that directory to start over")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, want, indent=2)


def _say(text: str) -> None:
    import sys
    print(f"[bisect] {text}", file=sys.stderr, flush=True)
