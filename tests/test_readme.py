"""The README a newcomer reads matches the repository: a row per notebook, and every local link resolves."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _missing_rows(readme: str, notebooks: list[str]) -> list[str]:
    """The notebooks (stems) that the README's notebook table has no row for."""
    rows = {m.group(1) for m in re.finditer(r"^\| `(\d\d_\w+)` \|", readme, re.M)}
    return sorted(set(notebooks) - rows)


def _broken_links(text: str, base: Path) -> list[str]:
    """The relative links of a markdown text whose target does not exist under `base`."""
    return sorted(t for t in LINK.findall(text) if "://" not in t and not (base / t).exists())


def test_every_notebook_has_a_row_in_the_readme():
    notebooks = [p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")]
    readme = (ROOT / "README.md").read_text()
    assert notebooks and not _missing_rows(readme, notebooks), _missing_rows(readme, notebooks)
    assert _missing_rows(readme.replace("`07_repa`", "`07`"), notebooks) == ["07_repa"]


def test_the_readme_and_docs_link_only_to_files_that_exist():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        broken = _broken_links(page.read_text(), page.parent)
        assert not broken, f"{page.name} links to files that do not exist: {broken}"
    assert _broken_links("see [the guide](docs/nowhere.md)", ROOT) == ["docs/nowhere.md"]
