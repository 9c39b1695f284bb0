"""lru_gen parser on /sys/kernel/debug/lru_gen{,_full} read in a guest around one
MGLRU aging command (tests/fixtures/evidence/README.md)."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.parsers import lrugen

FIX = Path(__file__).parent / "fixtures" / "evidence"


def load(name: str) -> list[lrugen.LruVec]:
    return lrugen.parse_lru_gen((FIX / name).read_text())


def test_before_aging():
    vecs = load("lru_gen-before-aging.txt")
    assert [(v.memcg_id, v.memcg_path, v.node) for v in vecs] == [(1, "/", 0), (2, "/evidence", 0)]
    (ev,) = lrugen.find_memcg(vecs, "/evidence")
    assert (ev.min_seq, ev.max_seq) == (0, 3)
    assert ev.pages == {0: 0, 1: 0, 2: 3, 3: 16789}
    assert ev.gens[-1].age_ms == 93248 and ev.anon_pages == 16792 and ev.file_pages == 0


def test_aging_command_is_the_one_the_guest_wrote():
    # the guest computed the command with awk from the same file and wrote it to lru_gen (rc=0)
    written = (FIX / "lru_gen-aging-command.txt").read_text().splitlines()
    assert written[1].startswith("rc=0")
    assert lrugen.aging_commands(load("lru_gen-before-aging.txt"), "/evidence") == [written[0]] == ["+ 2 0 3 1 1"]
    assert lrugen.aging_commands(load("lru_gen-before-aging.txt"), "/sys/fs/cgroup/evidence", force_scan=0) == ["+ 2 0 3 1 0"]
    with pytest.raises(LookupError, match="/evidence"):
        lrugen.aging_commands(load("lru_gen-before-aging.txt"), "/nope")


def test_after_aging_a_new_generation():
    (ev,) = lrugen.find_memcg(load("lru_gen-after-aging.txt"), "evidence")
    assert (ev.min_seq, ev.max_seq) == (1, 4)
    youngest = ev.gens[-1]
    assert (youngest.seq, youngest.age_ms, youngest.anon, youngest.file) == (4, 92, 0, 0)
    assert ev.pages[3] == 16790  # the guest's memory stayed in the generation it was in
    (root,) = lrugen.find_memcg(load("lru_gen-after-aging.txt"), "/")
    assert root.max_seq == 3  # only the memcg named in the command aged


def test_full_format_tiers_and_walk_stats():
    (ev,) = lrugen.find_memcg(load("lru_gen_full-after-aging.txt"), "/evidence")
    assert [g.seq for g in ev.gens] == [1, 2, 3, 4]
    assert all(len(g.tiers) == 4 for g in ev.gens)
    assert [g.anon for g in ev.gens] == [0, 2, 16790, 0]
    walked = ev.gens[2]
    assert walked.mm_stats == (17462, 16257, 37, 32) and walked.mm_marks == "tyfa"
    youngest = ev.gens[3]
    assert youngest.tiers[0].marks == "RTxRTx" and youngest.mm_marks == "xxxx"
    assert ev.gens[0].tiers[3].tier == 3 and ev.gens[0].tiers[3].marks == "reprep"
    # the short and the full file agree on the generations they both show
    (short,) = lrugen.find_memcg(load("lru_gen-after-aging.txt"), "/evidence")
    assert [(g.seq, g.anon, g.file) for g in short.gens] == [(g.seq, g.anon, g.file) for g in ev.gens]


def test_evicted_marks_and_truncation():
    text = "memcg     2 /evidence\n node     0\n          5       1000         10x         20 \n          6        10          1           2 \n"
    (v,) = lrugen.parse_lru_gen(text)
    assert v.gens[0].anon_evicted and not v.gens[0].file_evicted
    assert v.anon_pages == 1 and v.file_pages == 22
    # starts mid-file (node without memcg), ends mid-line: complete lines only
    full = (FIX / "lru_gen-before-aging.txt").read_text()
    vecs = lrugen.parse_lru_gen(full[full.index(" node"):full.index("16789") + 2])
    assert [(v.memcg_path, v.max_seq) for v in vecs] == [("/evidence", 2)]
