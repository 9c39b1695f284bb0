"""Faults in what the user gives (series, config, matrix, workload parameters)
and on the host (missing toolchain), produced for real through the command
line: exit status, one message naming what and how to fix it, no traceback,
and the JUnit verdict where run-matrix gets that far.

Parsing-level cases are in test_series.py / test_apply.py / test_matrix.py /
test_kconfig.py; here they are checked where the user meets them.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

import faults_support as fs
from orchestrator.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
BREAK_BUILD = ROOT / "tests" / "fixtures" / "patches" / "break-build.patch"
FROM = "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"


def mail(subject: str, diff: str) -> str:
    return (f"From: A U Thor <a@example.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nSubject: {subject}\n\n"
            f"Why.\n\nSigned-off-by: A U Thor <a@example.org>\n---\n{diff}-- \n2.39.5\n")


NOT_APPLYING = mail("[PATCH] mm: change a line that is not there", (
    "diff --git a/mm/vmscan.c b/mm/vmscan.c\n--- a/mm/vmscan.c\n+++ b/mm/vmscan.c\n"
    "@@ -30,3 +30,3 @@\n this line\n-is not in\n+was never in\n vmscan.c\n"))
OUTSIDE = mail("[PATCH] evil", "--- a/../../etc/passwd\n+++ b/../../etc/passwd\n@@ -1 +1 @@\n-root\n+toor\n")
BINARY = mail("[PATCH] blob", "diff --git a/f.bin b/f.bin\nindex 1..2 100644\nGIT binary patch\nliteral 3\nKcmZ?\n\n")


def cli(*args: str, env: dict | None = None, timeout: float = 900, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The real command line; afterwards no process it started (make, git, QEMU ...) may be left."""
    token = fs.new_token()
    try:
        res = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, capture_output=True,
                             text=True, timeout=timeout, env={**(env or os.environ), fs.TOKEN_ENV: token})
        left = fs.wait_no_leftovers(token, 10)
    finally:
        fs.kill_leftovers(token)
    assert left == [], f"left behind by {args}: {left}"
    return res


@pytest.fixture(autouse=True)
def no_partial_files(tmp_path):
    yield
    assert fs.partial_files(tmp_path) == []


def maxrss_kib(*args: str, env: dict) -> tuple[subprocess.CompletedProcess, int]:
    """The CLI run alone in a fresh interpreter that reports its own peak RSS
    (RUSAGE_CHILDREN of the test would be the largest child so far)."""
    code = ("import resource, sys\nfrom orchestrator.cli import main\nrc = main(sys.argv[1:])\n"
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(rc)\n")
    res = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=env)
    rss = [int(line.split()[1]) for line in res.stderr.splitlines() if line.startswith("MAXRSS ")]
    assert rss, res.stderr[-2000:]
    return res, rss[0]


def fresh_cache(tmp: Path) -> dict[str, str]:
    """An empty cache: preparing the kernel source would unpack the tarball into it (minutes)."""
    return {**os.environ, "XDG_CACHE_HOME": str(tmp / "empty-cache")}


def source_untouched(env: dict[str, str]) -> bool:
    sources = Path(env["XDG_CACHE_HOME"]) / "arm64-orchestrator" / "sources"
    return not sources.exists() or not any(sources.iterdir())


def junit_steps(junit: Path) -> dict[str, dict[str, object]]:
    return {suite.name: {c.name: (c.result[0] if c.result else None) for c in suite}
            for suite in JUnitXml.fromfile(str(junit))}


def series_dir(tmp: Path, patches: dict[str, str], variants: dict[str, list[str]], name: str = "series") -> Path:
    d = tmp / name
    d.mkdir()
    for name, text in patches.items():
        (d / name).write_text(text)
    (d / "variants.yaml").write_text(json.dumps({"variants": variants}))
    return d


def matrix(tmp: Path, series: Path | None, variants: list[str], config_sets=("evidence",), **extra) -> Path:
    m = tmp / "m.yaml"
    lines = [f"variants: {json.dumps(variants)}", f"config_sets: {json.dumps(list(config_sets))}",
             "machines: [default]", extra.pop("workloads", "workloads: [page-idle]")]
    if series is not None:
        lines.append(f"series: {series}")
    lines += [f"{k}: {v}" for k, v in extra.items()]
    m.write_text("\n".join(lines) + "\n")
    return m


def no_traceback(res: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]


# -- series -----------------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.parametrize(("name", "content", "rc", "message"), [
    ("0001-not-applying.patch", NOT_APPLYING, 1, "mm/vmscan.c hunk #1"),
    ("0001-evil.patch", OUTSIDE, 2, "0001-evil.patch: patch 0001-evil.patch touches "
                                     "'a/../../etc/passwd', which is outside the source tree"),
    ("0001-blob.patch", BINARY, 2, "patch 0001-blob.patch contains a binary diff"),
    ("covers.mbox", FROM + mail("[PATCH 0/2] cover", "") + FROM + mail("[PATCH 1/2] no diff", ""), 2,
     "contains no patches (1 file(s), 2 mail(s) without a diff)"),
    ("empty", None, 2, "contains no patches"),
])
def test_series_faults_at_the_command_line(kernel_source, tmp_path, name, content, rc, message) -> None:
    target = tmp_path / "series" / name
    target.parent.mkdir()
    if content is None:
        target.mkdir()
    else:
        target.write_text(content)
    res = cli("build", "--series", str(target), "--no-selftests")
    no_traceback(res)
    assert res.returncode == rc, res.stderr[-2000:]
    shown = res.stdout + res.stderr
    assert message in shown, shown[-2000:]
    if rc == 2:
        assert res.stderr.startswith("error: ") and "how to fix: " in res.stderr
    if rc == 1:  # the per-patch report: which patch failed, where, what came after
        assert re.search(r"1\s+failed\s+-\s+0001-not-applying\.patch", res.stdout)
        assert "mm/vmscan.c hunk #1 (line 30): " in res.stdout


@pytest.mark.integration
def test_run_matrix_reports_a_patch_that_does_not_apply_and_a_bad_series(kernel_source, tmp_path) -> None:
    bad = series_dir(tmp_path, {"0001-not-applying.patch": NOT_APPLYING}, {"bad": ["0001-not-applying.patch"]}, "s1")
    res = cli("run-matrix", "--matrix", str(matrix(tmp_path, bad, ["bad"])), "--results", str(tmp_path / "out1"))
    no_traceback(res)
    assert res.returncode == 1  # a patch that does not apply is the thing under test failing
    cell = junit_steps(tmp_path / "out1" / "junit.xml")["bad.evidence.default.page-idle.r1"]
    apply = cell["apply 0001-not-applying.patch"]
    assert isinstance(apply, Failure) and "mm/vmscan.c hunk #1 (line 30): " in apply.message
    assert "0001-not-applying.patch" in apply.text  # the per-patch report
    assert all(isinstance(cell[n], Skipped) for n in ("build", "boot", "nested-kvm", "workload page-idle"))

    # A series the orchestrator refuses to apply (here a binary patch) is bad input: the matrix
    # is refused when it loads (exit 2), naming the matrix line, the variant and the patch,
    # before any cell starts, so no results directory is made.
    blob = series_dir(tmp_path, {"0001-blob.patch": BINARY}, {"blob": ["0001-blob.patch"]}, "s2")
    m2 = matrix(tmp_path, blob, ["blob"])
    res = cli("run-matrix", "--matrix", str(m2), "--results", str(tmp_path / "out2"))
    no_traceback(res)
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: {m2}:5: series: variant 'blob': "), res.stderr[-2000:]
    assert "0001-blob.patch contains a binary diff" in res.stderr
    assert "how to fix: binary changes are not supported" in res.stderr
    assert not (tmp_path / "out2").exists()
    assert not list((tmp_path / "out1" / "cells").glob("*/console.log"))  # nothing was booted


@pytest.mark.integration
def test_run_matrix_build_error_shows_the_first_compiler_error(kernel_source, tmp_path) -> None:
    series = series_dir(tmp_path, {"break-build.patch": BREAK_BUILD.read_text()}, {"broken": ["break-build.patch"]})
    res = cli("run-matrix", "--matrix", str(matrix(tmp_path, series, ["broken"])), "--results", str(tmp_path / "out"))
    no_traceback(res)
    assert res.returncode == 1
    build = junit_steps(tmp_path / "out" / "junit.xml")["broken.evidence.default.page-idle.r1"]["build"]
    assert isinstance(build, Failure)
    assert build.message.startswith("make Image failed (exit 2): ") and "young_pages_seen" in build.message
    assert "arch/arm64/kvm/mmu.c" in build.text and "error:" in build.text and "full log: " in build.text


def test_giant_and_garbage_patches_are_bounded(tmp_path) -> None:
    env = fresh_cache(tmp_path)
    big = tmp_path / "giant.patch"
    with big.open("wb") as f:
        f.truncate(65 << 20)  # sparse: must be refused before it is read
    for args in (("apply", str(big)), ("build", "--series", str(big), "--no-selftests")):
        t0 = time.monotonic()
        res = cli(*args, env=env)
        no_traceback(res)
        assert res.returncode == 2 and "is larger than the 64 MiB limit for one input file" in res.stderr
        assert time.monotonic() - t0 < 30
        assert source_untouched(env), "the source was prepared before the series was checked"
    garbage = tmp_path / "garbage.patch"
    garbage.write_bytes(os.urandom(20 << 20))
    t0 = time.monotonic()
    res, peak = maxrss_kib("apply", str(garbage), env=env)
    no_traceback(res)
    assert res.returncode == 2 and "garbage.patch contains no patches" in res.stderr
    assert time.monotonic() - t0 < 60
    assert peak < 1 << 20, f"{peak} KiB for 20 MiB of input"  # this process alone, under 1 GiB
    assert source_untouched(env)


def test_yaml_bomb_in_a_series_variants_file_is_refused_quickly(tmp_path) -> None:
    env = fresh_cache(tmp_path)
    d = tmp_path / "series"
    d.mkdir()
    (d / "0001-x.patch").write_text(NOT_APPLYING)
    lines, prev = ["variants:", "  a: &a [[x, x, x, x, x, x, x, x, x]]"], "a"
    for i in range(1, 10):  # 9**10 references if expanded
        lines.append(f"  l{i}: &l{i} [{', '.join(['*' + prev] * 9)}]")
        prev = f"l{i}"
    (d / "variants.yaml").write_text("\n".join(lines) + "\n")
    t0 = time.monotonic()
    res = cli("build", "--series", str(d), "--variant", "l9", "--no-selftests", env=env)
    no_traceback(res)
    assert res.returncode == 2 and "must be a list of patch file names" in res.stderr
    assert time.monotonic() - t0 < 60
    assert source_untouched(env), "the source was prepared before the series was checked"


# -- config -------------------------------------------------------------------------

def test_unknown_fragment_lists_the_known_ones() -> None:
    res = cli("build", "--config-set", "base,nosuchfrag", "--no-selftests")
    no_traceback(res)
    assert res.returncode == 2
    assert "error: unknown config fragment 'nosuchfrag'" in res.stderr
    assert "how to fix: known fragments: base, " in res.stderr


def test_run_matrix_unknown_config_set_is_refused_when_the_matrix_loads(tmp_path) -> None:
    m = matrix(tmp_path, None, ["baseline"], config_sets=("nosuchset",))
    res = cli("run-matrix", "--matrix", str(m), "--results", str(tmp_path / "out"), "--list")
    no_traceback(res)
    assert res.returncode == 2
    assert re.search(rf"{re.escape(str(m))}:\d+: config_sets: unknown config set 'nosuchset'", res.stderr), res.stderr
    assert "sets in " in res.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was listed, built or booted


@pytest.mark.integration
def test_run_matrix_option_dropped_by_olddefconfig(kernel_source, baseline_build, tmp_path, monkeypatch) -> None:
    """ZRAM without BLK_DEV: merge_config + olddefconfig drop it (real kconfig, a
    private object directory; no kernel is built)."""
    import orchestrator.kernel.kconfig
    from orchestrator.matrix.spec import load_matrix
    from orchestrator.paths import KERNEL_CONFIGS_DIR
    from orchestrator.matrix.options import RunOptions
    from orchestrator.matrix.scheduler import run_cells

    configs = tmp_path / "kernel_configs"
    configs.mkdir()
    for f in KERNEL_CONFIGS_DIR.glob("*.config"):
        (configs / f.name).write_text(f.read_text())
    (configs / "zram-no-blk.config").write_text("CONFIG_ZRAM=y\n# CONFIG_BLK_DEV is not set\n")
    (configs / "sets.yaml").write_text("sets:\n  dropzram: [base, kvm, zram-no-blk]\n")
    monkeypatch.setattr(orchestrator.kernel.kconfig, "KERNEL_CONFIGS_DIR", configs)
    monkeypatch.setenv("XDG_CACHE_HOME", str(fs.temp_cache(tmp_path / "xdg", fresh=("builds",))))
    m = load_matrix(matrix(tmp_path, None, ["baseline"], config_sets=("dropzram",)))
    rc = run_cells(m, m.cells, RunOptions(results_dir=tmp_path / "out", matrix_arg="m.yaml"))
    assert rc == 1
    cell = junit_steps(tmp_path / "out" / "junit.xml")["baseline.dropzram.default.page-idle.r1"]
    verdict = cell["config verification"]
    assert isinstance(verdict, Failure)
    assert (f"CONFIG_ZRAM=y requested by {configs}/zram-no-blk.config:1 but the final .config has CONFIG_ZRAM=n"
            in verdict.message)
    # The unmet dependency, read from the tree's own Kconfig, and the line that fixes it (docs/faults.md).
    assert "ZRAM depends on BLK_DEV [=n] (drivers/block/Kconfig:" in verdict.message
    assert "add 'CONFIG_BLK_DEV=y' to a fragment" in verdict.message
    assert isinstance(cell["boot"], Skipped)


# -- host ---------------------------------------------------------------------------

@pytest.mark.integration
def test_missing_toolchain_names_the_install_command(kernel_source, tmp_path) -> None:
    env = {**os.environ, "PATH": str(fs.path_without(tmp_path / "bin", "aarch64-linux-gnu-"))}
    install = ("apt-get install gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu libc6-dev-arm64-cross   "
               "(or run `orchestrator install-deps`)")
    res = cli("build", "--no-selftests", env=env)
    no_traceback(res)
    assert res.returncode == 2
    assert res.stderr == f"error: compiler aarch64-linux-gnu-gcc not found on PATH\n  how to fix: {install}\n"
    res = cli("run-matrix", "--matrix", str(matrix(tmp_path, None, ["baseline"])), "--results", str(tmp_path / "out"),
              env=env)
    no_traceback(res)
    assert res.returncode == 2
    build = junit_steps(tmp_path / "out" / "junit.xml")["baseline.evidence.default.page-idle.r1"]["build"]
    assert isinstance(build, Error)
    assert build.message == f"compiler aarch64-linux-gnu-gcc not found on PATH (how to fix: {install})"


# -- injection and escapes ------------------------------------------------------------

def test_workload_parameter_injection_is_rejected_before_anything_runs(tmp_path) -> None:
    from orchestrator.workload.definitions import load_workload

    evil = "64M; touch /tmp/pwned"
    with pytest.raises(UserError, match=re.escape(f"parameter bytes={evil!r} does not match ^[0-9]+[KMG]?$")):
        load_workload("page-idle").resolve_params({"bytes": evil})
    m = matrix(tmp_path, None, ["baseline"],
               workloads=f"workloads: [{{name: page-idle, params: {{bytes: {json.dumps(evil)}}}}}]")
    t0 = time.monotonic()
    res = cli("run-matrix", "--matrix", str(m), "--results", str(tmp_path / "out"))
    no_traceback(res)
    assert res.returncode == 2
    assert f"m.yaml:4: workloads[0].params: workload page-idle: parameter bytes={evil!r} does not match" in res.stderr
    assert not (tmp_path / "out").exists()  # refused before any build, boot or results
    assert time.monotonic() - t0 < 60


def test_parameters_reach_the_guest_as_single_quoted_words() -> None:
    """Even under a permissive pattern, a value is one argument of the guest command."""
    from dataclasses import replace

    from orchestrator.workload.definitions import ParamSpec, load_workload

    w = load_workload("page-idle")
    loose = replace(w, params={**w.params, "bytes": ParamSpec("bytes", "1M", ".*")})
    evil = "64M; touch /tmp/pwned $(reboot) `id` '\""
    argv = loose.argv({"bytes": evil})
    assert argv[-1] == evil
    assert shlex.split(loose.command({"bytes": evil})) == argv


@pytest.mark.parametrize("axis", ["variants", "config_sets", "machines"])
def test_matrix_names_cannot_climb_out(tmp_path, axis) -> None:
    from orchestrator.matrix.spec import load_matrix

    m = tmp_path / "m.yaml"
    m.write_text(f"{axis}: [../../etc]\nworkloads: [page-idle]\n")
    with pytest.raises(UserError, match=rf"m\.yaml:1: {axis}: invalid {axis} '\.\./\.\./etc'"):
        load_matrix(m)


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/escaped-abs"])
def test_matrix_name_cannot_put_results_outside_results(tmp_path, name) -> None:
    m = tmp_path / "m.yaml"
    m.write_text(f"name: {name!r}\nvariants: [baseline]\nworkloads: [page-idle]\n")
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    res = cli("run-matrix", "--matrix", str(m), cwd=work)
    no_traceback(res)
    assert res.returncode == 2 and "invalid matrix name in " in res.stderr
    assert not (work / "results").exists() and not (tmp_path / "a" / "escaped").exists()
    assert not Path("/tmp/escaped-abs").exists()


def test_cache_and_workload_paths_cannot_escape() -> None:
    from orchestrator.paths import cache_dir
    from orchestrator.workload.definitions import load_workload

    for bad in ("..", "../x", "a/b", "/etc", ".hidden"):
        with pytest.raises(UserError, match="invalid cache path component"):
            cache_dir("builds", bad)
    with pytest.raises(UserError, match="invalid workload name"):
        load_workload("../matrices/default")


def test_ssh_forwarding_is_bound_to_localhost_in_every_shape() -> None:
    from orchestrator.vm.machine import HostInfo, available_shapes, render_qemu_argv, shape_by_name

    hosts = [HostInfo("x86_64", False, False, (7, 2)), HostInfo("aarch64", True, True, (10, 1))]
    for name in available_shapes():
        shape = shape_by_name(name)
        if not shape.network:
            continue
        for host in hosts:
            argv = render_qemu_argv(shape, Path("/k/Image"), Path("/k/initrd"), "", 10022, host=host)
            netdevs = [a for a in argv if "hostfwd=" in a]
            assert len(netdevs) == 1
            assert re.findall(r"hostfwd=([^,]+)", netdevs[0]) == ["tcp:127.0.0.1:10022-:22"], (name, netdevs)
            no_ssh = render_qemu_argv(shape, Path("/k/Image"), Path("/k/initrd"), "", None, host=host)
            assert not any("hostfwd" in a for a in no_ssh)


# -- pure parts of the new fault handling ----------------------------------------------------

def test_classify_end() -> None:
    from orchestrator.workload.evidence import classify_end

    memcg = ("[ 4.7] oom-kill:constraint=CONSTRAINT_MEMCG,task=fault,pid=83\n"
             "[ 4.7] Memory cgroup out of memory: Killed process 83 (fault) total-vm:33728kB\n")
    guest = "[ 21.6] Out of memory: Killed process 90 (hog) total-vm:1kB\n"
    assert classify_end(0, 1.0, 10, "", 0) == ("", "")
    assert classify_end(1, 1.0, 10, "", 0) == ("", "")
    assert classify_end(None, 1.0, 10, "", 0) == ("", "")
    why, lines = classify_end(137, 2.0, 10, memcg, 1)
    assert why == "killed by the OOM killer: its memory cgroup hit memory.max (fault, pid 83)"
    assert "Memory cgroup out of memory" in lines
    assert classify_end(137, 2.0, 10, guest, 0)[0] == ("killed by the guest kernel's OOM killer: the whole guest "
                                                       "ran out of memory (hog, pid 90)")
    assert classify_end(137, 10.2, 10, "", 0)[0] == "timed out: the guest-side limit of 10 s killed it (SIGKILL)"
    assert classify_end(137, 2.0, 10, "", 0)[0] == "killed by SIGKILL (exit status 137)"
    assert classify_end(139, 0.1, 10, "x[1]: unhandled level 1 translation fault (11)\n", 0) == (
        "killed by SIGSEGV (exit status 139)", "x[1]: unhandled level 1 translation fault (11)")


def test_sshd_problem_from_the_boot_log() -> None:
    from orchestrator.vm.session import sshd_problem

    assert sshd_problem("ORCH-INIT\nORCH-SSH ok pid=63\nORCH-READY uptime=1.0\n") == ""
    assert sshd_problem("ORCH-INIT\nORCH-SSH failed\nORCH-READY uptime=1.0\n") == (
        "guest init could not start sshd ('ORCH-SSH failed' on the console)")
    assert sshd_problem("ORCH-INIT\nORCH-READY uptime=1.0\n").startswith("guest init did not start sshd (no ORCH-SSH")
