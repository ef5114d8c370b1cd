"""The batch-grading command on a small class: statuses, scores, resume, and parallel workers on
the PostgreSQL gradebook it starts itself."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from course_notebooks import ROOT, copy_course, nbgrader_role, source_notebook, submit, with_solutions_replaced

pytestmark = pytest.mark.slow
ASSIGNMENT = "ex01_change_of_variables"
COMMAND = [sys.executable, str(ROOT / "tests" / "hidden" / "instructor" / "batch_grade.py"), ASSIGNMENT]


@pytest.fixture(scope="module")
def course():
    with tempfile.TemporaryDirectory(prefix="batch-") as scratch:
        os.chmod(scratch, 0o755)  # PostgreSQL runs as its own user when the tests run as root
        course = copy_course(Path(scratch), [])
        notebook = source_notebook(ASSIGNMENT)
        bugs = importlib.import_module(f"course_grading.bugs.{ASSIGNMENT}").BUGS
        submit(course, "alice", ASSIGNMENT, notebook)
        submit(course, "bob", ASSIGNMENT, with_solutions_replaced(
            notebook, {"numerical_jacobian": bugs["jacobian_transposed"].source}))
        submit(course, "carol", ASSIGNMENT, with_solutions_replaced(
            notebook, {"numerical_jacobian": bugs["jacobian_delegates_to_course_pkg"].source}))
        broken = nbformat.from_dict(notebook)
        next(c for c in broken.cells if nbgrader_role(c)).metadata["nbgrader"]["schema_version"] = 1
        submit(course, "dave", ASSIGNMENT, broken)
        yield course


def run(course: Path, *args: str) -> str:
    result = subprocess.run([*COMMAND, *args], cwd=course, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_two_workers_grade_the_class_on_postgres(course):
    output = run(course, "--workers", "2")
    assert "4 to grade with 2 workers (postgres)" in output
    assert len([line for line in output.splitlines() if line.startswith("[")]) == 4  # a progress line each
    summary = json.loads((course / "grading" / f"{ASSIGNMENT}.json").read_text())
    assert {s: r["status"] for s, r in summary.items()} == {
        "alice": "ok", "bob": "ok", "carol": "delegated", "dave": "metadata error"}
    assert (summary["alice"]["score"], summary["alice"]["max_score"]) == (15, 15)
    assert summary["bob"]["score"] == 12  # the transposed Jacobian: visible check and two hidden checks
    assert summary["carol"]["score"] == 3  # delegation refused: only the visible check
    assert "metadata" in summary["dave"]["message"]


def test_a_second_run_resumes_and_grades_only_changed_submissions(course):
    assert "4 already graded, 0 to grade" in run(course, "--workers", "2")
    notebook = course / "submitted" / "bob" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    os.utime(notebook)  # bob submits again
    output = run(course, "--workers", "2")
    assert "3 already graded, 1 to grade with 2 workers (postgres)" in output and "bob: ok" in output
    # Another gradebook has none of these grades: everyone is graded into it.
    assert "0 already graded, 4 to grade with 1 worker (sqlite)" in run(course)


def test_bad_arguments_are_refused_with_a_reason(course):
    result = subprocess.run([*COMMAND, "--workers", "2", "--database", "sqlite"], cwd=course,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "SQLite takes one writer at a time" in result.stderr
    result = subprocess.run(COMMAND, cwd=ROOT / "tests", capture_output=True, text=True)
    assert result.returncode == 2 and "run this from the course root" in result.stderr
