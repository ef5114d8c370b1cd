"""Reading and rewriting the course's nbgrader notebooks in tests."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
import sys
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


def _distinctive(lines: list[str], min_length: int) -> list[str]:
    """Lines long enough to be telling, other than imports and lines the public package has too."""
    public = {line.strip() for path in (ROOT / "course_pkg").rglob("*.py") for line in path.read_text().splitlines()}
    return [line for line in (raw.strip() for raw in lines)
            if len(line) >= min_length and not line.startswith(("import ", "from ", "#", '"""', "@"))
            and line not in public]


def secret_lines(assignment: str) -> list[str]:
    """Distinctive lines of the solution regions and hidden parts of an assignment's source notebook."""
    source = "\n".join(cell.source for cell in source_notebook(assignment).cells)
    return _distinctive([line for region in SECRET_REGION.findall(source) for line in region.splitlines()], 13)


def hidden_check_lines(assignment: str) -> list[str]:
    """Distinctive code lines of an assignment's hidden-check module."""
    source = (ROOT / "tests" / "hidden" / f"{assignment}.py").read_text()
    return [line for line in _distinctive(source.splitlines(), 31) if not line.startswith("def ")]


def copy_course(destination: Path, assignments_to_generate: list[str]) -> Path:
    """A copy of the instructor's course (config, solutions, hidden checks) with the assignments generated."""
    shutil.copy(ROOT / "nbgrader_config.py", destination)
    shutil.copytree(ROOT / "solutions", destination / "solutions")
    shutil.copytree(ROOT / "tests" / "hidden", destination / "tests" / "hidden",
                    ignore=shutil.ignore_patterns("__pycache__"))
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
