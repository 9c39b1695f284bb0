"""Results as KCIDB data (KernelCI's common database), schema v5.3.

One checkout per variant (base source + its patchset), one build per
(variant, config set), and per matrix cell one test per step: boot,
nested-KVM check, the workload and each verdict (plus ssh/interrupted/...
when a cell has them).  Pure: records and build outcomes in, a dict out;
`write_kcidb` puts it next to junit.xml, `merge_kcidb` unions the files of
several result directories (shards) by object id.

Files (logs, patches, .config) are referenced as file:// URLs on the machine
that ran the matrix; submitting to KCIDB needs them published at http(s)
URLs first (see the README: kcidb-submit).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.reports.suite_tests import flat_cases
from orchestrator.reports.results import ERROR, FAILED, PASSED, SKIPPED, CellRecord, Step, write_json_atomic

SCHEMA_VERSION = {"major": 5, "minor": 3}
DEFAULT_ORIGIN = "arm64_orchestrator"
ARCHITECTURE = "arm64"
_ORIGIN_RE = re.compile(r"^[a-z0-9_]+$")
_STATUS = {PASSED: "PASS", FAILED: "FAIL", ERROR: "ERROR"}
_EXCERPT_MAX = 16384  # KCIDB's maxLength for log_excerpt
# A suite's per-test status (parsers/ktap.py) in KCIDB: a test the run never reached is MISS.
_SUITE_STATUS = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP", "not run": "MISS"}


@dataclasses.dataclass(frozen=True)
class KcidbOptions:
    origin: str = DEFAULT_ORIGIN
    id_prefix: str = ""  # after "origin:", before every generated id

    @staticmethod
    def parse(text: str | None) -> "KcidbOptions":
        """`ORIGIN` or `ORIGIN:PREFIX` (the --kcidb-origin option)."""
        if not text:
            return KcidbOptions()
        origin, _, prefix = text.partition(":")
        if not _ORIGIN_RE.match(origin):
            raise UserError(f"--kcidb-origin {text!r}: origin {origin!r} must match [a-z0-9_]+ (KCIDB's origin pattern)",
                            hint=f"e.g. --kcidb-origin {re.sub(r'[^a-z0-9_]', '_', origin.lower()) or DEFAULT_ORIGIN}"
                                 + (f":{prefix}" if prefix else ""))
        return KcidbOptions(origin, prefix)

    def id(self, *parts: str) -> str:
        return f"{self.origin}:{self.id_prefix}" + "-".join(parts)


def patchset_hash(patch_texts: Iterable[bytes]) -> str:
    """As KCIDB defines it: sha256 over the newline-terminated sha256 hex of
    each patch in order (`sha256sum *.patch | cut -c-64 | sha256sum`); "" for none."""
    digests = [hashlib.sha256(t).hexdigest() for t in patch_texts]
    if not digests:
        return ""
    return hashlib.sha256("".join(d + "\n" for d in digests).encode()).hexdigest()


_MSGID_RE = re.compile(r"^Message-I[Dd]:\s*<?([^<>\s]+@[^<>\s]+)>?", re.MULTILINE | re.IGNORECASE)


def message_id(texts: Iterable[str]) -> str | None:
    """The first Message-ID among the series' mails (headers only), without the angle brackets."""
    for text in texts:
        head = text.split("\n\n", 1)[0]
        if m := _MSGID_RE.search(head):
            return m.group(1)
    return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def _url(path: Path | str) -> str:
    return Path(path).resolve().as_uri()


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]+", "_", text.strip()).strip("_") or "x"


def test_path(step_name: str) -> str:
    """JUnit step name -> KCIDB test path: "workload page-idle" -> "workload.page-idle",
    "verdict path-exercised" -> "verdict.path-exercised", "nested-kvm" -> "nested-kvm"."""
    return ".".join(_slug(w) for w in step_name.split(" ", 1))


def test_status(step: Step) -> str:
    """KCIDB status: a step skipped because an earlier one failed did not run
    for reasons outside itself (MISS); one that does not apply (no KVM, program
    not in this tree) is SKIP."""
    if step.status in _STATUS:
        return _STATUS[step.status]
    if step.message.startswith(("not run", "no kernel")) or step.message in ("series did not apply",):
        return "MISS"
    return "SKIP"


# ---------------------------------------------------------------- builders


@dataclasses.dataclass
class CheckoutInput:
    """What a checkout object is made from (one per variant)."""
    variant: str
    source: dict  # PreparedSource.identity (+ "base_commit")
    patches: list[tuple[str, bytes]]  # (name, the mail text git am applied)
    applied: bool
    patch_dir: Path  # where the patch files are written (for patchset_files)


def checkout_object(opts: KcidbOptions, ci: CheckoutInput, start: float) -> dict:
    src = ci.source
    version = src.get("kernel_version", "")
    tree = src.get("tree") or src.get("tarball") or "linux"
    tree_name = (f"debian-{src['debian_package'].split('=')[0]}" if src.get("debian_package")
                 else Path(str(tree)).name.removesuffix(".tar.xz") or "linux")
    phash = patchset_hash(t for _, t in ci.patches)
    base = src.get("base_commit") or src.get("commit") or src.get("head")
    ident = hashlib.sha256(json.dumps([src, phash], sort_keys=True, default=str).encode()).hexdigest()[:16]
    obj: dict = {"id": opts.id("checkout", ident), "origin": opts.origin, "tree_name": tree_name,
                 "patchset_hash": phash, "start_time": _iso(start), "valid": ci.applied,
                 "comment": f"{tree_name} {version} + {ci.variant} ({len(ci.patches)} patch(es))",
                 "misc": {"variant": ci.variant, "source": src}}
    if version:
        obj["git_commit_name"] = version
    if base and re.fullmatch(r"[0-9a-f]{40}", str(base)):
        obj["git_commit_hash"] = base
    if ci.patches:
        ci.patch_dir.mkdir(parents=True, exist_ok=True)
        files = []
        for i, (name, text) in enumerate(ci.patches, 1):
            fname = f"{i:04d}-{_slug(Path(name.split('#')[0]).stem)[:60]}.patch"
            dest = ci.patch_dir / fname
            if not dest.is_file() or dest.read_bytes() != text:
                dest.write_bytes(text)
            files.append({"name": fname, "url": _url(dest)})
        obj["patchset_files"] = files
        if mid := message_id(t.decode("utf-8", "replace") for _, t in ci.patches):
            obj["message_id"] = mid
    return obj


def build_object(opts: KcidbOptions, checkout_id: str, variant: str, config_set: str, steps: list[Step],
                 meta: dict | None, start: float, seconds: float) -> dict:
    build_step = next((s for s in steps if s.name == "build"), None)
    failed_before = next((s for s in steps if s.status in (FAILED, ERROR) and s.name != "build"), None)
    status = "MISS"
    if build_step is not None:
        status = test_status(build_step)
    if failed_before is not None and (build_step is None or build_step.status == SKIPPED):
        status = "SKIP" if failed_before.name.startswith("apply") else test_status(failed_before)
    key = (meta or {}).get("key") or hashlib.sha256(f"{checkout_id}\0{config_set}".encode()).hexdigest()[:32]
    obj: dict = {"id": opts.id("build", key[:24], _slug(config_set)), "checkout_id": checkout_id,
                 "origin": opts.origin, "architecture": ARCHITECTURE, "config_name": config_set,
                 "start_time": _iso(start), "status": status,
                 "comment": f"{variant} / {config_set}"}
    excerpt = next((s.excerpt for s in steps if s.status in (FAILED, ERROR) and s.excerpt), "")
    if excerpt:
        obj["log_excerpt"] = excerpt[:_EXCERPT_MAX]
    misc: dict = {"variant": variant}
    if meta:
        durations = meta.get("durations_s") or {}
        obj["duration"] = float(durations.get("total", seconds))
        obj["compiler"] = meta.get("toolchain", "")
        if meta.get("make"):
            obj["command"] = " ".join(meta["make"])
        out_dir = Path(meta.get("out_dir", ""))
        log = out_dir / "build.log"
        if log.is_file():
            obj["log_url"] = _url(log)
            obj["output_files"] = [{"name": n, "url": _url(out_dir / n)} for n in ("build.log", "Image", "System.map")
                                   if (out_dir / n).is_file()]
        if (out_dir / ".config").is_file():
            obj["config_url"] = _url(out_dir / ".config")
            obj["input_files"] = [{"name": "config", "url": _url(out_dir / ".config")}]
        misc.update({k: meta[k] for k in ("key", "config_sha256", "config_base", "fragments", "recompiled_c_files",
                                          "cache_hit") if k in meta})
        misc["warnings"] = len(meta.get("warnings") or [])
    else:
        obj["duration"] = float(seconds)
    obj["misc"] = misc
    return obj


def test_objects(opts: KcidbOptions, build_id: str, rec: CellRecord, cell_dir: Path | None,
                 environment: dict) -> list[dict]:
    """One test per step after the build (apply/config/build are the build object)."""
    out = []
    workload = str(rec.cell.get("workload", ""))
    for step in rec.steps:
        if step.name == "build" or step.name.startswith("apply ") or step.name in ("series", "config verification"):
            continue
        path = test_path(step.name)
        obj: dict = {"id": opts.id("test", rec.key, path), "build_id": build_id, "origin": opts.origin,
                     "path": path, "status": test_status(step), "duration": float(step.seconds),
                     "start_time": _iso(rec.started), "environment": environment,
                     "misc": {"cell": rec.key, "variant": rec.cell.get("variant"), "config_set": rec.cell.get("config_set"),
                              "repeat": rec.cell.get("repeat"), "reproducer": rec.reproducer}}
        if step.message:
            obj["comment"] = step.message[:4000]
        if step.excerpt:
            obj["log_excerpt"] = step.excerpt[:_EXCERPT_MAX]
        if cell_dir is not None and (cell_dir / "console.log").is_file():
            obj["log_url"] = _url(cell_dir / "console.log")
        if step.name == f"workload {workload}":
            obj["misc"]["params"] = rec.cell.get("params", {})
            obj["misc"]["metrics"] = dict(rec.metrics)
            ev = cell_dir / "evidence" if cell_dir is not None else None
            if ev is not None and ev.is_dir():
                files = [{"name": p.name, "url": _url(p)} for p in sorted(ev.iterdir()) if p.is_file()]
                if files:
                    obj["output_files"] = files
        out.append(obj)
    for case in flat_cases(rec):  # a suite workload: one test per selftest (and subtest), KernelCI's paths
        obj = {"id": opts.id("test", rec.key, case.path), "build_id": build_id, "origin": opts.origin,
               "path": case.path, "status": _SUITE_STATUS.get(case.status, "MISS"), "duration": case.seconds,
               "start_time": _iso(rec.started), "environment": environment,
               "misc": {"cell": rec.key, "variant": rec.cell.get("variant"), "repeat": rec.cell.get("repeat")}}
        if case.reason:
            obj["comment"] = case.reason[:4000]
        if case.output and case.status == "fail":
            obj["log_excerpt"] = case.output[-_EXCERPT_MAX:]
        out.append(obj)
    return out


def environment_of(machine: str, target: dict | None = None) -> dict:
    """The KCIDB environment of a cell: what ran its guest (the record's target
    identity; a record from before targets existed ran in the local QEMU) and
    the machine shape."""
    from orchestrator.vm.machine import shape_by_name  # machine shapes are files: read them only here
    try:
        shape = dataclasses.asdict(shape_by_name(machine))
    except UserError:
        shape = {"name": machine}
    target = dict(target or {"kind": "qemu"})
    if target.get("kind") == "qemu":
        ran = "qemu-system-aarch64" + (f" {target['qemu']}" if target.get("qemu") else "")
        ran += " -M virt,virtualization=on"
    else:
        ran = ", ".join(f"{k} {v}" for k, v in target.items())
    return {"comment": f"{ran}, machine shape {machine} "
                       f"({shape.get('vcpus', '?')} vCPUs, {shape.get('memory_mb', '?')} MB)",
            "misc": {"machine": shape, "target": target}}


def kcidb_data(opts: KcidbOptions, checkouts: dict[str, CheckoutInput],
               builds: dict[tuple[str, str], tuple[list[Step], dict | None, float, float]],
               records: list[tuple[CellRecord, Path | None]]) -> dict:
    """The whole report.  builds: (variant, config set) -> (build steps, kernel metadata, start, seconds)."""
    start = min((r.started for r, _ in records), default=datetime.now(timezone.utc).timestamp())
    out: dict = {"version": dict(SCHEMA_VERSION), "checkouts": [], "builds": [], "tests": []}
    checkout_ids = {}
    for variant, ci in checkouts.items():
        obj = checkout_object(opts, ci, start)
        checkout_ids[variant] = obj["id"]
        out["checkouts"].append(obj)
    build_ids = {}
    for (variant, config_set), (steps, meta, t0, seconds) in builds.items():
        obj = build_object(opts, checkout_ids[variant], variant, config_set, steps, meta, t0, seconds)
        build_ids[(variant, config_set)] = obj["id"]
        out["builds"].append(obj)
    envs: dict[str, dict] = {}
    for rec, cell_dir in records:
        bk = (rec.cell.get("variant"), rec.cell.get("config_set"))
        if bk not in build_ids:
            continue  # a cell of a build this run did not make (a merged result)
        machine = str(rec.cell.get("machine", ""))
        env_key = json.dumps([machine, rec.target], sort_keys=True)
        env = envs.setdefault(env_key, environment_of(machine, rec.target))
        out["tests"].extend(test_objects(opts, build_ids[bk], rec, cell_dir, env))
    return out


# ---------------------------------------------------------------- the run's file


_BUILD_STEPS = ("series", "config verification", "build")


def from_run(opts: KcidbOptions, matrix, records: list[tuple[CellRecord, Path | None]], built: dict | None,
             out: Path) -> dict:
    """kcidb data of a run: built is (variant, config set) -> runner.BuildOutcome,
    or None (cell records only, e.g. a saved results directory: builds are then
    made from each cell's build steps, without compiler or logs)."""
    from orchestrator.kernel.variants import resolve
    checkouts: dict[str, CheckoutInput] = {}
    builds: dict = {}
    start = min((r.started for r, _ in records), default=datetime.now(timezone.utc).timestamp())
    outcomes: dict = dict(built or {})
    for rec, _ in records:  # builds the records know of but `built` does not
        bk = (rec.cell.get("variant"), rec.cell.get("config_set"))
        if bk not in outcomes:
            steps = [s for s in rec.steps if s.name in _BUILD_STEPS or s.name.startswith("apply ")]
            outcomes[bk] = dataclasses.make_dataclass("Outcome", ["steps", "build", "seconds"])(
                steps, None, sum(s.seconds for s in steps))
    for (variant, config_set), outcome in outcomes.items():
        vb = outcome.build
        if variant not in checkouts:
            try:
                _, series = resolve(matrix.series, variant)
            except UserError:
                series = None
            patches = [(p.name, p.text.encode()) for p in series.patches] if series is not None else []
            if vb is not None:
                source = dict(vb.source.identity, base_commit=vb.source.base_commit)
            else:
                source = {"spec": matrix.source or "default"}
            applied = not any(s.name.startswith("apply ") and s.status == FAILED for s in outcome.steps)
            checkouts[variant] = CheckoutInput(variant, source, patches, applied, out / "kcidb-files" / _slug(variant))
        meta = None
        if vb is not None:
            meta = dict(vb.kernel.metadata, out_dir=str(vb.kernel.out_dir), cache_hit=vb.kernel.cache_hit)
        builds[(variant, config_set)] = (outcome.steps, meta, start, outcome.seconds)
    return kcidb_data(opts, checkouts, builds, records)


def write_kcidb(opts: KcidbOptions, matrix, records, built: dict, out: Path) -> Path:
    path = out / "kcidb.json"
    write_json_atomic(path, from_run(opts, matrix, records, built, out))
    return path


def merge_kcidb(dirs: list[Path], out: Path) -> Path | None:
    """Union of the dirs' kcidb.json by object id (shards share checkouts and builds)."""
    merged: dict = {"version": dict(SCHEMA_VERSION), "checkouts": [], "builds": [], "tests": []}
    seen: dict[str, set[str]] = {k: set() for k in ("checkouts", "builds", "tests")}
    found = False
    for d in dirs:
        path = d / "kcidb.json"
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise UserError(f"{path}: not valid JSON ({exc})", hint="rerun that shard, or delete the file") from None
        found = True
        for kind in seen:
            for obj in data.get(kind, []):
                if obj.get("id") not in seen[kind]:
                    seen[kind].add(obj.get("id"))
                    merged[kind].append(obj)
    if not found:
        return None
    path = out / "kcidb.json"
    write_json_atomic(path, merged)
    return path
