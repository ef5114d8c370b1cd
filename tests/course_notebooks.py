"""Reading and rewriting the course's nbgrader notebooks in tests."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
HIDDEN_PART = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS\n?", re.DOTALL)
SECRET_REGION = re.compile(r"### BEGIN (?:SOLUTION|HIDDEN TESTS)\n(.*?)### END (?:SOLUTION|HIDDEN TESTS)", re.DOTALL)
SECRET_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS", "from grader import")


def assignments() -> list[str]:
    return sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())


def source_notebook(assignment: str, root: Path = ROOT) -> nbformat.NotebookNode:
    return nbformat.read(root / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)


def nbgrader_role(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def solution_ids(notebook) -> list[str]:
    return [nbgrader_role(c)["grade_id"] for c in notebook.cells if nbgrader_role(c).get("solution")]


def with_solutions_replaced(notebook, replacements: dict[str, str]):
    """A copy of ``notebook`` whose solution cells named in ``replacements`` hold the given code."""
    copy = nbformat.from_dict(notebook)
    for cell in copy.cells:
        grade_id = nbgrader_role(cell).get("grade_id")
        if grade_id in replacements:
            cell.source = replacements[grade_id].strip()
    return copy


def solution_namespace(assignment: str, replacements: dict[str, str] | None = None) -> dict:
    """Run the source notebook's code cells, except the check cells, and return their namespace."""
    notebook = with_solutions_replaced(source_notebook(assignment), replacements or {})
    namespace: dict = {}
    for cell in notebook.cells:
        if cell.cell_type == "code" and not nbgrader_role(cell).get("grade"):
            exec(compile(cell.source, f"<{assignment}>", "exec"), namespace)
    return namespace


def visible_check_passes(assignment: str, check_id: str, namespace: dict) -> bool:
    """Run the visible part of the check cell ``check_id`` in ``namespace``; did it pass?"""
    cell = next(c for c in source_notebook(assignment).cells if nbgrader_role(c).get("grade_id") == check_id)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(HIDDEN_PART.sub("", cell.source), f"<{check_id}>", "exec"), dict(namespace))
    except Exception:
        return False
    return True


def secret_lines(assignment: str) -> list[str]:
    """Distinctive lines of the solution regions and hidden parts of an assignment's source notebook."""
    source = "\n".join(cell.source for cell in source_notebook(assignment).cells)
    return [line.strip() for region in SECRET_REGION.findall(source)
            for line in region.splitlines() if len(line.strip()) > 12]


def hidden_check_lines(assignment: str) -> list[str]:
    """Distinctive code lines of an assignment's hidden-check module."""
    source = (ROOT / "tests" / "hidden" / f"{assignment}.py").read_text()
    return [line.strip() for line in source.splitlines()
            if len(line.strip()) > 30 and not line.strip().startswith(('"""', "#", "@check", "def "))]
