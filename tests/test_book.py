"""The built book: every chapter in the table of contents is there with its figures and outputs,
and no page, `_sources` file or search-index entry carries solution text or a hidden check.

Uses the site that `jupyter-book build .` left in `_build/html` (the README's first command, and
what CI runs first), through the `site` fixture in conftest.py, which builds it when it is not
there yet (or uses the site that `$COURSE_BOOK_SITE` names).
"""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pytest
import yaml

from course_notebooks import ROOT, SECRET_MARKERS, assignments, hidden_check_lines, secret_lines

pytestmark = pytest.mark.slow


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    chapters = toc.get("chapters", []) + [c for part in toc.get("parts", []) for c in part["chapters"]]
    return [toc["root"]] + [chapter["file"] for chapter in chapters]


def page_text(path: Path) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", path.read_text(errors="replace")))


def test_every_toc_page_is_built(site):
    for name in toc_files():
        assert (site / f"{name}.html").exists(), name


def test_only_toc_pages_are_published(site):
    pages = {str(p.relative_to(site).with_suffix("")) for p in site.rglob("*.html") if "_static" not in p.parts}
    extra = pages - set(toc_files()) - {"genindex", "search", "index"}
    assert extra == set(), f"pages outside the table of contents were published: {sorted(extra)}"


@pytest.mark.parametrize("name", [f for f in toc_files() if "ch" in Path(f).name])
def test_chapters_show_figures_and_outputs_and_no_errors(site, name):
    html = (site / f"{name}.html").read_text()
    images = re.findall(r'<img[^>]+src="([^"]+)"', html)
    figures = [src for src in images if "_images/" in src]
    assert len(figures) >= 3, f"{name} shows {len(figures)} figures"
    for src in figures:
        assert (site / Path(name).parent / src).resolve().stat().st_size > 2000, src
    assert html.count('class="output') >= 3
    for error in ("Traceback (most recent call last)", "Error:", "NameError", "ModuleNotFoundError"):
        assert error not in page_text(site / f"{name}.html"), f"{name} shows an error output: {error}"


@pytest.mark.parametrize("name", toc_files())
def test_headings_and_navigation_are_numbered_once(site, name):
    """The table of contents numbers the chapters; a title that carries its own number shows "3. 3. ..."."""
    html = (site / f"{name}.html").read_text()
    doubled = re.findall(r'section-number">(\d+)\. </span>\1\. ', html) + re.findall(r'>\s*(\d+)\. \1\. [A-Z]', html)
    assert doubled == [], f"{name} numbers a chapter twice"


def test_site_holds_no_solution_and_no_hidden_check(site):
    published = [p for p in site.rglob("*") if p.is_file() and p.suffix in {".html", ".txt", ".js", ".md", ".ipynb", ".py"}]
    assert any(p.name == "searchindex.js" for p in published)
    assert any("_sources" in p.parts for p in published)
    text = {p: p.read_text(errors="replace") for p in published}
    secrets = [line for a in assignments() for line in secret_lines(a) + hidden_check_lines(a)]
    assert secrets
    for path, content in text.items():
        for marker in SECRET_MARKERS:
            assert marker not in content, f"{path.relative_to(site)} contains {marker!r}"
        leaked = [line for line in secrets if line in content]
        assert leaked == [], f"{path.relative_to(site)} contains solution or hidden-check text: {leaked[:2]}"


def test_chapter_3_shows_the_final_state_of_its_training_bar_once(site):
    """The MNIST training cell leaves one line, the finished bar: no wall of updates, no widget."""
    html = (site / "book" / "ch03_coupling.html").read_text()
    bars = re.findall(r"training: +\d+%\|[^\n]*?\]", unescape(html))
    assert len(bars) == 1, f"expected the one final bar line, found {len(bars)}: {bars[:3]}"
    assert re.fullmatch(r"training: 100%\|#{10}\| 250/250 \[\d\d:\d\d<00:00, loss=\S+, bpd=\d\.\d{3}\]", bars[0])
    assert "widget-view" not in html
