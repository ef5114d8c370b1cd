"""The course being graded: its root, its assignments, its notebooks, and what of them is secret.

The hidden part of a check cell is found by one regular expression, :data:`HIDDEN_PART`; the
grading (which leaves it out of the feedback), the student edition's leak audit and the tests all
use this one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat

from course_grading import PACKAGE_ROOT, course_folder

HIDDEN_PART = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS\n?", re.DOTALL)
SECRET_REGION = re.compile(r"### BEGIN (?:SOLUTION|HIDDEN TESTS)\n(.*?)### END (?:SOLUTION|HIDDEN TESTS)", re.DOTALL)
# The markers of nbgrader's secret regions, and the line by which the hidden part of a check cell
# calls the grader (the grader's name is no secret: the guide and the README speak of it).
SECRET_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS", "from course_grading.engine.grader import grade")


def course_root() -> Path:
    """The root of the course being graded (``COURSE_GRADING_ROOT``, else the repository of this package)."""
    return Path(os.environ.get("COURSE_GRADING_ROOT") or PACKAGE_ROOT.parents[1])


def assignments(root: Path | None = None) -> list[str]:
    return sorted(p.name for p in ((root or course_root()) / "solutions").iterdir() if p.is_dir())


def source_notebook(assignment: str, root: Path | None = None) -> nbformat.NotebookNode:
    return nbformat.read((root or course_root()) / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)


def _distinctive(lines: list[str], min_length: int) -> list[str]:
    """Lines long enough to be telling, other than imports and lines the public package has too."""
    public = {line.strip() for path in (course_root() / "course_pkg").rglob("*.py")
              for line in path.read_text().splitlines()}
    return [line for line in (raw.strip() for raw in lines)
            if len(line) >= min_length and not line.startswith(("import ", "from ", "#", '"""', "@"))
            and line not in public]


def secret_lines(assignment: str) -> list[str]:
    """Distinctive lines of the solution regions and hidden parts of an assignment's source notebook,
    other than lines its release shows anyway (a diagnosis task's given code shares most of its fix)."""
    source = "\n".join(cell.source for cell in source_notebook(assignment).cells)
    released = {line.strip() for line in SECRET_REGION.sub("", source).splitlines()}
    secret = [line for region in SECRET_REGION.findall(source) for line in region.splitlines()]
    return [line for line in _distinctive(secret, 13) if line not in released]


def hidden_check_lines(assignment: str) -> list[str]:
    """Distinctive code lines of an assignment's hidden checks."""
    return module_lines(course_folder("checks") / f"{assignment}.py")


def expectation_lines() -> list[str]:
    """Distinctive code lines of the expectations every assignment's checks share."""
    return module_lines(PACKAGE_ROOT / "engine" / "expectations.py")


def module_lines(path: Path) -> list[str]:
    return [line for line in _distinctive(path.read_text().splitlines(), 31) if not line.startswith("def ")]
