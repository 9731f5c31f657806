"""Every relative link between the docs resolves: the file exists and, with an anchor, one of its headings makes it.

The docs cross-link hundreds of sections (the guides into their histories and back); a heading renamed or a section moved
to another file breaks links silently, since GitHub renders a missing anchor as the file's top.
"""

import re
import unicodedata
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: link texts kept, lower case, letters, digits, '-' and '_' kept, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return "".join("-" if c == " " else c for c in text
                   if c in " -_" or unicodedata.category(c)[0] in "LN" or unicodedata.category(c) in ("Mn", "Mc"))


def prose_lines(path: Path):
    """(line number, line) outside code fences."""
    fence = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence:
            yield number, line


@cache
def anchors(path: Path) -> frozenset[str]:
    """The heading anchors of a file; a repeated heading's anchor gets -1, -2, ... as on GitHub."""
    counts: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(1))
            found.add(f"{base}-{counts[base]}" if base in counts else base)
            counts[base] = counts.get(base, 0) + 1
    return frozenset(found)


def broken_links(files: list[Path]) -> list[str]:
    broken = []
    for path in files:
        for number, line in prose_lines(path):
            for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):  # a code span is not a link
                file_part, _, anchor = target.partition("#")
                if "://" in target or target.startswith("mailto:") or (file_part and not file_part.endswith(".md")):
                    continue
                dest = (path.parent / file_part).resolve() if file_part else path
                if not dest.exists():
                    broken.append(f"{path.name}:{number}: {target} (no such file)")
                elif anchor and anchor not in anchors(dest):
                    broken.append(f"{path.name}:{number}: {target} (no such heading)")
    return broken


def test_every_link_between_the_docs_resolves():
    files = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
    assert len(files) > 10
    assert broken_links(files) == []


def test_a_moved_or_renamed_section_is_reported(tmp_path):
    (tmp_path / "guide.md").write_text(
        "# Guide\n## What is left (issue 15)\n[ok](#what-is-left-issue-15) [moved](history.md#a-round) "
        "[gone](#old-name) `[code](#not-a-link)`\n```\n[fenced](#nor-this)\n```\n## Same\n## Same\n[second](#same-1)\n")
    (tmp_path / "history.md").write_text("# History\n## A round: kept\n")
    assert broken_links([tmp_path / "guide.md"]) == [
        "guide.md:3: history.md#a-round (no such heading)",
        "guide.md:3: #old-name (no such heading)",
    ]


@pytest.mark.parametrize("heading, anchor", [
    ("Overload, sixth round (fastswitch's deferred counters, vllm-v0's kept order)",
     "overload-sixth-round-fastswitchs-deferred-counters-vllm-v0s-kept-order"),
    ("The [matrix](#the-matrix) at 1 replica: 10,000 req/s", "the-matrix-at-1-replica-10000-reqs"),
    ("H200's first token and `stream_interval`", "h200s-first-token-and-stream_interval"),
])
def test_anchors_follow_githubs_rules(heading, anchor):
    assert slug(heading) == anchor
