"""Reading and rewriting the course's nbgrader notebooks in tests."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from course_grading.course import (  # noqa: F401 (the tests import these from here)
    HIDDEN_PART,
    SECRET_MARKERS,
    assignments,
    hidden_check_lines,
    secret_lines,
    source_notebook,
)

ROOT = Path(__file__).resolve().parents[1]


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


def copy_course(destination: Path, assignments_to_generate: list[str]) -> Path:
    """A copy of the instructor's course (config, solutions, hidden checks) with the assignments generated."""
    shutil.copy(ROOT / "nbgrader_config.py", destination)
    shutil.copytree(ROOT / "solutions", destination / "solutions")
    shutil.copytree(ROOT / "tests" / "hidden", destination / "tests" / "hidden",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for assignment in assignments_to_generate:
        run_nbgrader(destination, "generate_assignment", assignment, "--force")
    return destination


def run_nbgrader(course: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, capture_output=True,
                            text=True, env=env)
    assert result.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def submit(course: Path, student: str, assignment: str, notebook) -> None:
    folder = course / "submitted" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, folder / f"{assignment}.ipynb")


def cell_scores(course: Path, assignment: str, student: str) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        notebook = gradebook.find_submission_notebook(assignment, assignment, student)
        return {grade.name: grade.score for grade in notebook.grades}
