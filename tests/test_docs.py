"""The docs stay true: every generated table matches its JSON, and every relative link leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks import tables
from conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCED_CODE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")


def test_every_generated_table_matches_its_json():
    assert tables.stale_tables() == [], "run `python -m benchmarks.tables`"


def test_every_known_table_is_in_the_docs():
    assert set(tables.marked_tables()) == set(tables.TABLES)


def test_the_check_names_an_out_of_date_table(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text("text\n<!-- table: padding_waste -->\n| strategy |\n|---|\n| old |\n<!-- /table -->\nmore\n")
    assert tables.stale_tables([doc]) == [f"{doc}: padding_waste"]
    text, changed = tables.regenerate(doc.read_text())
    assert changed == ["padding_waste"]
    assert text.startswith("text\n<!-- table: padding_waste -->\n| strategy | padding |")
    assert text.endswith("\n<!-- /table -->\nmore\n")
    assert tables.regenerate(text) == (text, [])


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    text = FENCED_CODE.sub("", doc.read_text())
    return {_slug(INLINE_CODE.sub(lambda m: m[0].strip("`"), line.lstrip("#")))
            for line in text.splitlines() if line.startswith("#")}


def test_every_relative_link_points_to_an_existing_file_and_heading():
    broken = []
    for doc in DOCS:
        text = INLINE_CODE.sub("", FENCED_CODE.sub("", doc.read_text()))
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            path, _, anchor = target.partition("#")
            linked = (doc.parent / path).resolve() if path else doc
            if not linked.exists():
                broken.append(f"{doc.relative_to(REPO)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{doc.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_package_module_is_described_in_the_architecture_page():
    # A newcomer looks a module up in docs/architecture.md's table; a module added without a row would
    # be found only by reading the code. Corpus readers are listed by name, the others by file name.
    table = (REPO / "docs" / "architecture.md").read_text()
    package = REPO / "armhubert_training"
    modules = [p for p in package.glob("*.py") if p.name != "__init__.py"]
    readers = [p for p in (package / "corpora").glob("*.py") if p.name != "__init__.py"]
    missing = ([p.name for p in modules if f"`{p.name}`" not in table]
               + [f"corpora/{p.name}" for p in readers if f"`{p.stem}`" not in table and f"`{p.name}`" not in table])
    assert not missing, f"not in docs/architecture.md's module table: {missing}"
