"""Every relative link in README.md and docs/*.md points at a file that exists
(and, with #anchor, at a heading of that file), so moving a document cannot
leave the front page pointing nowhere."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    bad = []
    for m in LINK.finditer(_prose(doc.read_text())):
        target = m.group(1) or m.group(2)
        if re.match(r"^[a-z]+:", target):  # http(s), mailto, file: not checked here
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.exists():
            bad.append(f"{doc.relative_to(root)}: {target}: {dest} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{doc.relative_to(root)}: {target}: no heading '#{anchor}' in {dest.name}")
    return bad


def test_relative_links_resolve() -> None:
    bad = [b for doc in documents() for b in broken_links(doc)]
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_the_check_sees_a_broken_link_and_anchor(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Title here\n\n[ok](#title-here) [gone](missing.md) [bad](a.md#nowhere)\n"
                                   "`[code](not-a-link.md)` [web](https://example.org/x)\n")
    bad = broken_links(tmp_path / "a.md", tmp_path)
    assert len(bad) == 2 and "missing.md" in bad[0] and "#nowhere" in bad[1]


def test_github_slugs() -> None:
    assert slug("Race evidence (the review of v4 6/7)") == "race-evidence-the-review-of-v4-67"
    assert slug("The matrix (`./run-matrix`) and its results") == "the-matrix-run-matrix-and-its-results"
    assert slug("Results: where they land and how to read them") == "results-where-they-land-and-how-to-read-them"
