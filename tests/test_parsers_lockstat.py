"""lock_stat parser on /proc/lock_stat captured from the project's kernel
(see tests/fixtures/evidence/README.md for how each file was produced)."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.parsers import lockstat

FIX = Path(__file__).parent / "fixtures" / "evidence"
MMU = "&(kvm)->mmu_lock"


def load(name: str) -> lockstat.LockStat:
    return lockstat.parse_lock_stat((FIX / name).read_text())


def stats_lines(name: str) -> list[str]:
    """Lines with the 12 columns, found without the parser: name + ':' then numbers."""
    return [line for line in (FIX / name).read_text().splitlines()
            if ":" in line and line.rsplit(":", 1)[1].split() and len(line.rsplit(":", 1)[1].split()) == 12]


def test_baseline_mmu_lock_sides_are_apart():
    st = load("lock_stat-baseline.txt")
    assert st.version == "0.4" and not st.lockdep_disabled
    mmu = lockstat.find_class(st, MMU)
    assert mmu is not None and mmu.split
    # values as printed on the -W: and -R: lines of the file
    assert mmu.write.acquisitions == 1078598
    assert mmu.write.contentions == 0
    assert mmu.write.holdtime_total_us == pytest.approx(6094551.86)
    assert mmu.write.holdtime_max_us == pytest.approx(202718.29)
    assert mmu.read.acquisitions == 16438
    assert mmu.read.holdtime_avg_us == pytest.approx(44.68)
    assert mmu.contention_points == [] and mmu.contending_points == []


def test_every_stats_line_is_a_class_side():
    for name in ("lock_stat-baseline.txt", "lock_stat-baseline-traced.txt"):
        st = load(name)
        sides = sum((c.write is not None) + (c.read is not None) for c in st.classes)
        assert sides == len(stats_lines(name)), name
        text = (FIX / name).read_text()
        points = sum(len(c.contention_points) + len(c.contending_points) for c in st.classes)
        assert points == text.count("[<"), name


def test_class_counts_and_kinds():
    st = load("lock_stat-baseline.txt")
    assert len(st.classes) == 217
    both = [c for c in st.classes if c.write is not None and c.read is not None]
    assert len(both) == 16 and all(c.split for c in both)  # -W: followed by -R:
    read_only = [c for c in st.classes if c.read is not None and c.write is None]
    assert len(read_only) == 23 and all(c.split for c in read_only)  # only a -R: line
    plain = lockstat.find_class(st, "&kvm->slots_lock")     # a mutex: no suffix, counted as write
    assert plain is not None and not plain.split and plain.read is None
    assert plain.write.acquisitions == 10


def test_names_with_spaces_and_cut_names():
    st = load("lock_stat-baseline.txt")
    spaced = lockstat.find_class(st, "&ACCESS_PRIVATE(sdp, lock)")
    assert spaced is not None and spaced.write.acquisitions == 30
    # the kernel prints at most 37 characters of a name; the full name still finds it
    cut = lockstat.find_class(st, "(work_completion)(&(&ssp->srcu_sup->work)->work)")
    assert cut is not None and cut.name == "(work_completion)(&(&ssp->srcu_sup->w"


def test_traced_run_contention_points():
    st = load("lock_stat-baseline-traced.txt")
    mmu = lockstat.find_class(st, MMU)
    assert mmu.write.contentions == 201 and mmu.write.con_bounces == 169
    assert mmu.write.waittime_total_us == pytest.approx(588597.18)
    assert mmu.write.acquisitions == 1093927
    assert [p.symbol for p in mmu.contention_points] == ["kvm_mmu_notifier_clear_young+0x1c0/0x354"]
    assert mmu.contention_points[0].count == 201
    assert mmu.contending_points[0].function == "kvm_mmu_notifier_clear_young"
    gp = lockstat.find_class(st, "&rcu_state.gp_wq")
    assert [p.function for p in gp.contention_points] == ["prepare_to_swait_event"]
    assert [p.function for p in gp.contending_points] == ["swake_up_one"]


def test_summary_flat_metrics():
    st = load("lock_stat-baseline-traced.txt")
    s = lockstat.summary(st, [MMU, "&no->such_lock"])
    assert s["mmu_lock.present"] == 1
    assert s["mmu_lock.write.acquisitions"] == 1093927
    assert s["mmu_lock.write.contentions"] == 201
    assert s["mmu_lock.read.acquisitions"] == 16438
    assert s["mmu_lock.read.contentions"] == 0
    assert s["mmu_lock.contention_point.kvm_mmu_notifier_clear_young"] == 201
    assert s["mmu_lock.contending_point.kvm_mmu_notifier_clear_young"] == 201
    assert s["such_lock.present"] == 0 and s["such_lock.write.acquisitions"] == 0
    aliased = lockstat.summary(st, {MMU: "kvm_mmu"})
    assert aliased["kvm_mmu.write.acquisitions"] == 1093927


def test_streamed_and_truncated():
    text = (FIX / "lock_stat-baseline-traced.txt").read_text()
    streamed = list(lockstat.iter_classes(iter(text.splitlines(keepends=True))))
    assert len(streamed) == 240
    # cut inside the mmu_lock -W line: that side is dropped, not misread
    cut_at = text.index("&(kvm)->mmu_lock-W:") + 120
    partial = lockstat.parse_lock_stat(text[:cut_at])
    assert lockstat.find_class(partial, MMU) is None
    # cut inside its contending point section: stats and contention point kept
    cut_at = text.index("kvm_mmu_notifier_clear_young", text.index("kvm_mmu_notifier_clear_young") + 1) - 5
    partial = lockstat.parse_lock_stat(text[:cut_at])
    mmu = lockstat.find_class(partial, MMU)
    assert mmu.write.acquisitions == 1093927 and len(mmu.contention_points) == 1 and mmu.contending_points == []
    assert lockstat.parse_lock_stat("").classes == []
    assert lockstat.parse_lock_stat("\x00garbage\n" * 100).classes == []


def test_short_names():
    assert lockstat.short_name(MMU) == "mmu_lock"
    assert lockstat.short_name("&mm->mmap_lock") == "mmap_lock"
    assert lockstat.short_name("&rcu_state.gp_wq") == "rcu_state.gp_wq"


def test_v4_fixed_ages_under_the_read_lock():
    """Same command on the kernel with the series (v4-fixed): kvm_age_gfn takes
    mmu_lock for reading, so the ~1.08 M write acquisitions of the baseline
    become read acquisitions."""
    base = lockstat.summary(load("lock_stat-baseline.txt"), [MMU])
    v4 = lockstat.summary(load("lock_stat-v4-fixed.txt"), [MMU])
    assert (base["mmu_lock.write.acquisitions"], base["mmu_lock.read.acquisitions"]) == (1078598, 16438)
    assert (v4["mmu_lock.write.acquisitions"], v4["mmu_lock.read.acquisitions"]) == (13, 1095246)
    assert v4["mmu_lock.write.contentions"] == v4["mmu_lock.read.contentions"] == 0
    assert v4["mmu_lock.read.holdtime_total_us"] == pytest.approx(9654054.64)
