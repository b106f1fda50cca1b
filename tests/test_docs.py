"""The README, docs/ and the results' READMEs stand on their own: no file outside the
repository is named (except the one note on the tests' data), no words about how the project
was made, and every relative link points at a file of the repository (and at a heading of it,
when the link names one)."""

from __future__ import annotations

import glob
import os
import re

import pytest
from experiments_support import ROOT

OUTSIDE = re.compile(r"\.\./shared|DESIGN\.md|PAPER\.md")
MAKING_OF = re.compile(r"\bsession\b|\blent\b|first tasks|design card", re.I)


def _docs() -> dict[str, str]:
    out = {}
    for path in [os.path.join(ROOT, "README.md"),
                 *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))),
                 *sorted(glob.glob(os.path.join(ROOT, "results", "*", "README.md")))]:
        out[os.path.relpath(path, ROOT)] = open(path).read()
    return out


@pytest.mark.parametrize("name", list(_docs()))
def test_no_outside_files_and_no_making_of(name):
    text = _docs()[name]
    hits = [m.group(0) for m in OUTSIDE.finditer(text)]
    if name == "README.md":  # the one note on the tests' data, in the Tests section
        tests_section = text.split("\n## Tests\n", 1)[1]
        assert len(OUTSIDE.findall(tests_section)) == 1, OUTSIDE.findall(tests_section)
        hits = OUTSIDE.findall(text.split("\n## Tests\n", 1)[0])
    assert not hits, f"{name} names files outside the repository: {hits}"
    lines = [ln for ln in text.splitlines() if MAKING_OF.search(ln)]
    assert not lines, f"{name}: {lines}"


def _anchors(path: str) -> set[str]:
    """GitHub's anchors of a markdown file's headings (lower case, punctuation dropped, spaces
    to hyphens), outside code blocks."""
    text = re.sub(r"```.*?```", "", open(path).read(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("name", list(_docs()))
def test_relative_links_exist(name):
    folder = os.path.dirname(os.path.join(ROOT, name))
    for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)]*))?\)", _docs()[name]):
        if "://" in target:
            continue
        path = os.path.join(folder, target) if target else os.path.join(ROOT, name)
        assert os.path.exists(path), f"{name}: broken link {target}"
        if anchor and path.endswith(".md"):
            assert anchor in _anchors(path), f"{name}: no heading for #{anchor} in {target or name}"
