"""Every results table in README.md (header `| variant | logits | S=...`) is the headline table
of the results folder named last before it, line for line, so the README cannot drift from
the committed reports. The README shows one such table, the CNN study's (the current answer);
the other studies' tables live in their own results READMEs only."""

import os
import re

from experiments_support import ROOT

HEADER = re.compile(r"^\| variant \| logits \| S=")


def _tables(text: str) -> list[tuple[int, list[str]]]:
    """(line number, rows) of every markdown table whose header matches HEADER."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        if HEADER.match(lines[i]):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            out.append((i, lines[i:j]))
            i = j
        else:
            i += 1
    return out


def _headline(folder: str) -> list[str]:
    text = open(os.path.join(ROOT, "results", folder, "table.md")).read()
    tables = _tables(text.split("**Headline**", 1)[1])
    return tables[0][1]


def test_readme_results_tables_match_their_folders():
    readme = open(os.path.join(ROOT, "README.md")).read()
    lines = readme.splitlines()
    checked = []
    for at, rows in _tables(readme):
        before = "\n".join(lines[:at])
        folder = re.findall(r"results/([a-z0-9_]+)/", before)[-1]
        assert rows == _headline(folder), f"README.md line {at + 1}: not results/{folder}'s table"
        checked.append(folder)
    assert checked == ["cifar10_cnn"], checked
