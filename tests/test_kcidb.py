"""kcidb.json: KCIDB v5 objects from real run records, validated with kcidb-io
(the schema library KernelCI publishes)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from kcidb_io.schema import LATEST, V5_3

from orchestrator.errors import UserError
from orchestrator.reports import kcidb
from orchestrator.reports.kcidb import KcidbOptions, from_run, merge_kcidb, message_id, patchset_hash
from orchestrator.kernel.variants import resolve
from orchestrator.paths import PATCHES_DIR
from orchestrator.reports.results import CellRecord, Step

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[1]
# Cell records of a real run: the race matrix on Debian's 6.12 (evidence, smp4 shape).
RACE_RUN = FIXTURES / "race" / "run"


def race_records() -> list[tuple[CellRecord, Path]]:
    out = []
    for d in sorted((RACE_RUN / "cells").iterdir()):
        rec = CellRecord.load(d)
        assert rec is not None, d
        out.append((rec, d))
    return out


def matrix(series: Path | None = PATCHES_DIR) -> SimpleNamespace:
    return SimpleNamespace(series=series, source=None, name="race")


def test_real_run_records_validate_against_kcidb_schema(tmp_path: Path):
    data = from_run(KcidbOptions(), matrix(), race_records(), None, tmp_path)
    assert V5_3.validate(data) is data and LATEST.is_valid(data)
    assert data["version"] == {"major": 5, "minor": 3}
    assert {c["misc"]["variant"] for c in data["checkouts"]} == {"baseline", "v4", "v4-fixed"}
    assert len(data["builds"]) == 3 and all(b["architecture"] == "arm64" and b["status"] == "PASS" for b in data["builds"])
    # one test per step after the build steps, in every cell
    after_build = sum(1 for rec, _ in race_records() for s in rec.steps
                      if s.name not in ("build", "config verification") and not s.name.startswith("apply "))
    assert len(data["tests"]) == after_build >= 9 * 5
    ids = [o["id"] for kind in ("checkouts", "builds", "tests") for o in data[kind]]
    assert len(ids) == len(set(ids)) and all(i.startswith("arm64_orchestrator:") for i in ids)
    paths = {t["path"] for t in data["tests"]}
    assert {"boot", "nested-kvm", "workload.race", "verdict.race_path_exercised"} <= paths
    workload = next(t for t in data["tests"] if t["path"] == "workload.race")
    assert workload["misc"]["metrics"] and workload["environment"]["misc"]["machine"]["name"] == "smp4"


def test_patchset_hash_is_kcidbs_shell_definition(tmp_path: Path):
    """KCIDB: `sha256sum *.patch | cut -c-64 | sha256sum | cut -c-64` over the linked files."""
    data = from_run(KcidbOptions(), matrix(), race_records(), None, tmp_path)
    by_variant = {c["misc"]["variant"]: c for c in data["checkouts"]}
    v4 = by_variant["v4-fixed"]
    files = [Path(f["url"].removeprefix("file://")) for f in v4["patchset_files"]]
    _, series = resolve(PATCHES_DIR, "v4-fixed")
    assert len(files) == len(series.patches) >= 3
    assert [f.read_bytes() for f in files] == [p.text.encode() for p in series.patches]
    shell = subprocess.run("sha256sum " + " ".join(map(str, files)) + " | cut -c-64 | sha256sum | cut -c-64",
                           shell=True, capture_output=True, text=True, check=True).stdout.strip()
    assert v4["patchset_hash"] == shell
    assert patchset_hash([]) == ""
    empty = from_run(KcidbOptions(), matrix(None), race_records()[:1], None, tmp_path / "none")
    assert empty["checkouts"][0]["patchset_hash"] == "" and "patchset_files" not in empty["checkouts"][0]
    # The linked files are what git am applied, and git apply accepts them.
    assert subprocess.run(["git", "apply", "--stat", *map(str, files)], capture_output=True).returncode == 0


def test_statuses_map_onto_kcidb():
    assert kcidb.test_status(Step("boot", "passed")) == "PASS"
    assert kcidb.test_status(Step("boot", "failed")) == "FAIL"
    assert kcidb.test_status(Step("boot", "error")) == "ERROR"
    assert kcidb.test_status(Step("boot", "skipped", message="not run: build did not pass")) == "MISS"
    assert kcidb.test_status(Step("workload page-idle", "skipped", message="no KVM in the guest")) == "SKIP"
    assert kcidb.test_path("verdict race: path exercised") == "verdict.race_path_exercised"


def test_failed_build_and_failed_patch(tmp_path: Path):
    steps = [Step("apply 0001-x.patch", "failed", message="mm/vmscan.c hunk #1: context does not match"),
             Step("build", "skipped", message="series did not apply"),
             Step("boot", "skipped", message="no kernel: see the build steps")]
    rec = CellRecord("v4.evidence.default.page-idle.r1", {"variant": "v4", "config_set": "evidence",
                                                         "machine": "default", "workload": "page-idle"}, "", "x", steps)
    data = from_run(KcidbOptions("my_ci", "run7-"), matrix(), [(rec, None)], None, tmp_path)
    V5_3.validate(data)
    assert data["checkouts"][0]["valid"] is False
    assert data["builds"][0]["status"] == "SKIP" and data["tests"][0]["status"] == "MISS"
    assert data["tests"][0]["id"].startswith("my_ci:run7-test-")


def test_origin_option_is_checked():
    assert KcidbOptions.parse("lab_1:nightly-") == KcidbOptions("lab_1", "nightly-")
    with pytest.raises(UserError) as exc:
        KcidbOptions.parse("My-Lab")
    assert "[a-z0-9_]+" in exc.value.message and "--kcidb-origin my_lab" in exc.value.hint


def test_message_id_from_the_series_mails():
    mail = "From: A <a@b>\nMessage-Id: <20240102.1234-1-x@kernel.org>\nSubject: [PATCH 1/2] x\n\nbody\nMessage-ID: <no@body>\n"
    assert message_id(["no headers\n\n", mail]) == "20240102.1234-1-x@kernel.org"
    assert message_id(["From: a\n\nMessage-ID: <in@body>\n"]) is None


def test_merge_unites_shards_by_id(tmp_path: Path):
    records = race_records()
    for name, part in (("s1", records[:5]), ("s2", records[4:])):
        (tmp_path / name).mkdir()
        data = from_run(KcidbOptions(), matrix(), part, None, tmp_path / name)
        (tmp_path / name / "kcidb.json").write_text(json.dumps(data))
    whole = from_run(KcidbOptions(), matrix(), records, None, tmp_path / "whole")
    merged = json.loads(merge_kcidb([tmp_path / "s1", tmp_path / "s2"], tmp_path).read_text())
    V5_3.validate(merged)
    for kind in ("checkouts", "builds", "tests"):
        assert sorted(o["id"] for o in merged[kind]) == sorted(o["id"] for o in whole[kind])
    assert merge_kcidb([tmp_path / "nothing"], tmp_path / "x") is None


# kcidb.json and cell records of a real run: ./run-matrix --matrix linux-6.1
# (Debian linux-source-6.1 6.1.192, evidence-modules, default shape, page-idle 16M).
LINUX61_RUN = FIXTURES / "kcidb" / "linux-6.1-run"


def test_real_61_run_kcidb_json_validates():
    data = json.loads((LINUX61_RUN / "kcidb.json").read_text())
    V5_3.validate(data)
    (checkout,), (build,) = data["checkouts"], data["builds"]
    assert checkout["git_commit_name"].startswith("6.1.") and checkout["patchset_hash"] == "" and checkout["valid"]
    assert build["checkout_id"] == checkout["id"] and build["config_name"] == "evidence-modules"
    assert build["status"] == "PASS" and build["compiler"].startswith("aarch64-linux-gnu-gcc") and build["duration"] > 60
    assert {t["path"]: t["status"] for t in data["tests"]} == {
        "boot": "PASS", "nested-kvm": "PASS", "workload.page-idle": "PASS",
        "verdict.page-idle_path_exercised": "PASS", "verdict.page-idle_no_kernel_warnings": "PASS",
        "expect.page-idle_aging_takes_mmu_lock_for_write": "PASS"}
    assert all(t["build_id"] == build["id"] and t["id"].startswith("arm64_orchestrator:linux61-") for t in data["tests"])


def test_61_records_alone_give_the_same_tests(tmp_path: Path):
    """`merge`/`report` elsewhere have the cell records, not the build cache."""
    records = [(CellRecord.load(d), d) for d in sorted((LINUX61_RUN / "cells").iterdir())]
    data = from_run(KcidbOptions("arm64_orchestrator", "linux61-"), matrix(ROOT / "matrices" / "linux-6.1-series"),
                    records, None, tmp_path)
    V5_3.validate(data)
    saved = json.loads((LINUX61_RUN / "kcidb.json").read_text())
    assert sorted(t["id"] for t in data["tests"]) == sorted(t["id"] for t in saved["tests"])
