"""Every number the README quotes from a results file is in that file.

The README is cut into units: paragraphs, list items, tables (fenced code is skipped). A unit that names
``benchmarks/results/<topic>.md`` is checked against that file. A table or list that names none takes the files of
the paragraph just above it (the one introducing it), a table row that names one is checked against its own,
and a paragraph right below such a table (the discussion of the table) takes the table's files.

Numbers checked (outside inline code): every decimal (0.790, 42.6), every percentage (61.1 %, 69 %), every number
with thousands separators (3,600, compared without them) and every other integer from 20 up, apart from years
(1900-2099). Smaller integers (k values, thread counts, step counts under 20, paper and table numbers) are not
checked. A number is found when the file holds the same value (0.5 = 0.50; 70.9 is not 71).

The recipe registry's reference numbers (``emoslm.registry``) are checked against their results files too.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

CITE = re.compile(r"benchmarks/results/(\w+\.md)")
# a number not glued to a word (SmolLM2-135M, L6, x4 are names); a trailing x (1.13x) or % is allowed
NUMBER = re.compile(r"(?<![\w.,/])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w,]\d|[A-Za-wyz_\d]|\.\d)(\s?%)?")
CODE = re.compile(r"`[^`]*`")

#: (results file, number as the README writes it) -> why the README may quote it although the file does not hold
#: it. Only for sections this check may not edit; an entry that is no longer needed makes the test fail.
ALLOW: dict[tuple[str, str], str] = {}


def _value(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None


def quoted_numbers(text: str) -> list[str]:
    """The numbers of ``text`` this check covers (see the module's docstring), as written."""
    out = []
    for m in NUMBER.finditer(CODE.sub(" ", text)):
        whole, frac, pct = m.group(1), m.group(2), m.group(3)
        n = int(whole.replace(",", ""))
        if frac or pct or "," in whole or (n >= 20 and not (len(whole) == 4 and 1900 <= n <= 2099)):
            out.append(whole + (frac or ""))
    return out


def file_values(name: str) -> set[Decimal]:
    text = (ROOT / "benchmarks" / "results" / name).read_text()
    return {v for m in re.finditer(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?", text)
            if (v := _value(m.group())) is not None}


def units(markdown: str) -> list[tuple[str, str, list[str]]]:
    """(kind, text, files cited) for every paragraph, list item, table and table row, in order; see the module's
    docstring for how a table, list or following paragraph takes the files of its neighbour."""
    lines, blocks, cur, fence = markdown.split("\n"), [], [], False
    for line in lines:
        if line.strip().startswith("```"):
            fence = not fence
            if cur:
                blocks.append(cur)
                cur = []
            continue
        if fence:
            continue
        if not line.strip() or line.startswith("#"):
            if cur:
                blocks.append(cur)
            cur = []
            if line.startswith("#"):
                blocks.append(["#"])  # a heading: nothing carries over it
            continue
        cur.append(line)
    if cur:
        blocks.append(cur)

    out: list[tuple[str, str, list[str]]] = []
    prev_kind, prev_files = "#", []
    for block in blocks:
        if block == ["#"]:
            prev_kind, prev_files = "#", []
            continue
        if all(x.lstrip().startswith("|") for x in block):
            files = CITE.findall("\n".join(block))
            own_rows = [r for r in block if CITE.search(r)]
            inherited = files if files and not own_rows else (prev_files if prev_kind == "paragraph" else [])
            for row in block:
                out.append(("table row", row, CITE.findall(row) or inherited))
            prev_kind, prev_files = "table", sorted(set(files) | set(inherited))
            continue
        first_item = next((i for i, x in enumerate(block) if re.match(r"\s*([-*]|\d+\.)\s", x)), None)
        para, items = (block, []) if first_item is None else (block[:first_item], block[first_item:])
        if para:
            text = " ".join(para)
            files = CITE.findall(text) or (prev_files if prev_kind == "table" else [])
            out.append(("paragraph", text, files))
            prev_kind, prev_files = "paragraph", files
        if items:
            intro = prev_files if prev_kind == "paragraph" else []
            grouped: list[list[str]] = []
            for x in items:
                if re.match(r"\s*([-*]|\d+\.)\s", x) or not grouped:
                    grouped.append([x])
                else:
                    grouped[-1].append(x)
            for item in grouped:
                text = " ".join(item)
                out.append(("list item", text, CITE.findall(text) or intro))
            prev_kind, prev_files = "list", []
    return out


def missing_numbers(markdown: str) -> list[tuple[str, str, str]]:
    """(results file, number, the unit's text) for every quoted number its cited files do not hold."""
    bad = []
    for _kind, text, files in units(markdown):
        if not files:
            continue
        values = set().union(*(file_values(f) for f in files))
        for num in quoted_numbers(text):
            if _value(num) not in values:
                bad.append((files[0] if len(files) == 1 else "+".join(sorted(set(files))), num, text))
    return bad


def test_cited_results_files_exist():
    cited = set(CITE.findall(README.read_text()))
    assert cited, "the README cites no results file"
    assert [f for f in cited if not (ROOT / "benchmarks" / "results" / f).is_file()] == []


def test_every_number_quoted_from_a_results_file_is_in_it():
    bad = [(f, n, t) for f, n, t in missing_numbers(README.read_text()) if (f, n) not in ALLOW]
    assert bad == [], "\n".join(f"{n} not in {f}: {t[:160]}" for f, n, t in bad)


def test_the_allow_list_is_still_needed():
    have = {(f, n) for f, n, _ in missing_numbers(README.read_text())}
    assert set(ALLOW) <= have, f"no longer needed: {set(ALLOW) - have}"


def test_registry_reference_numbers_are_in_their_results_files():
    from emoslm.registry import RECIPES

    bad = []
    for r in RECIPES.values() if isinstance(RECIPES, dict) else RECIPES:
        if r.reference and r.results_file:
            values = file_values(Path(r.results_file).name)
            bad += [(r.name, n) for n in quoted_numbers(r.reference) if _value(n) not in values]
    assert bad == []


@pytest.mark.parametrize("text, numbers", [
    ("0.600 (0-shot) to 0.790 at 7 shots, 1.13x, 61.1 %, 69 % and 3,600 requests in 2026", ["0.600", "0.790",
                                                                                            "1.13", "61.1", "69",
                                                                                            "3,600"]),
    ("SmolLM2-135M, all-MiniLM-L6-v2, x4, k=7, 4 speakers, `--steps 150,100,100`, paper 000, 130 speakers",
     ["130"]),
    ("0.62-0.64, 50 / 33.3 / 15.0", ["0.62", "0.64", "50", "33.3", "15.0"]),
])
def test_which_numbers_are_checked(text, numbers):
    assert quoted_numbers(text) == numbers


def test_a_table_takes_the_file_of_the_paragraph_introducing_it():
    md = ("Intro (`benchmarks/results/speaker_dependence.md`):\n\n| a | b |\n|---|---|\n| raw | 0.598 |\n\n"
          "Below the table, 0.874.\n\nUnrelated 0.111.\n")
    assert [(f, n) for f, n, _ in missing_numbers(md)] == [("speaker_dependence.md", "0.598")]
