"""The student edition: the book, the exercises and course_pkg as a wheel, with nothing secret."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from course_notebooks import ROOT, secret_lines

pytestmark = pytest.mark.slow
COMMAND = [sys.executable, str(ROOT / "tests" / "hidden" / "instructor" / "student_edition.py")]


@pytest.fixture(scope="module")
def edition(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("edition") / "students"
    result = subprocess.run([*COMMAND, str(out)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "leak audit: 0 secrets found" in result.stdout
    return out


def test_edition_holds_the_book_the_exercises_and_a_wheel(edition):
    assert (edition / "book" / "index.html").exists()
    assert (edition / "book" / "book" / "ch01_change_of_variables.html").exists()
    released = sorted(p.name for p in (edition / "exercises").iterdir())
    assert released == sorted(p.name for p in (ROOT / "exercises").iterdir())
    (wheel,) = (edition / "wheels").glob("course_pkg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "course_pkg/flows/base.py" in names
    assert not any(name.startswith(("tests/", "solutions/")) for name in names)


def test_nothing_of_the_instructors_reaches_the_edition(edition):
    files = {str(p.relative_to(edition)) for p in edition.rglob("*")}
    assert not any("solutions" in name or "hidden" in name or "gradebook" in name for name in files)


def test_the_audit_finds_a_planted_solution_line(edition, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(edition / "exercises", copy)
    secret = secret_lines("ex01_change_of_variables")[0]
    page = copy / "planted.html"
    page.write_text(f"<p>{secret}</p>")
    result = subprocess.run([*COMMAND, str(copy), "--audit-only"], capture_output=True, text=True)
    assert result.returncode == 1
    assert f"LEAK {page}: {secret!r}" in result.stdout
