"""The instructor's path, end to end, through real nbgrader commands and a real gradebook.

In a temporary copy of the course: generate each assignment and compare the result with the
committed ``exercises/`` (any drift fails), make sure no solution or hidden check reached it,
then autograde three submissions — the source notebook (full marks), the untouched release
(zero, no crash) and one with a deliberate bug in every function (loses exactly the points of
the checks each bug breaks) — and read the scores back through nbgrader's API.
"""

from __future__ import annotations

import importlib
import re
from html import unescape
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from course_grading.engine import grader

from course_notebooks import (
    ROOT,
    SECRET_MARKERS,
    assignments,
    cell_scores,
    copy_course,
    hidden_check_lines,
    nbgrader_role,
    run_nbgrader,
    secret_lines,
    source_notebook,
    submit,
    with_solutions_replaced,
)

pytestmark = pytest.mark.slow
ASSIGNMENTS = assignments()


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A copy of the instructor's course with every assignment generated afresh."""
    return copy_course(tmp_path_factory.mktemp("course"), ASSIGNMENTS)


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_committed_release_is_exactly_what_nbgrader_generates(course, assignment):
    generated = files_under(course / "exercises" / assignment)
    committed = files_under(ROOT / "exercises" / assignment)
    assert generated.keys() == committed.keys()
    for name in generated:
        assert generated[name] == committed[name], (
            f"exercises/{assignment}/{name} drifted from solutions/; "
            f"run `nbgrader generate_assignment {assignment} --force` and commit the result"
        )


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_holds_no_solution_and_no_hidden_check(assignment):
    release = "\n".join(p.read_text() for p in (ROOT / "exercises" / assignment).rglob("*") if p.is_file())
    secrets = secret_lines(assignment)
    assert secrets, "the source notebook should have solution and hidden-test regions"
    for marker in SECRET_MARKERS:
        assert marker not in release
    leaked = [line for line in secrets if line in release]
    assert leaked == [], f"solution or hidden-check lines reached exercises/{assignment}: {leaked[:3]}"


def expected_scores_with_bugs(assignment: str, bug_names: list[str]) -> dict[str, float]:
    """Points per grade cell of a submission carrying the given bugs (one per function)."""
    bugs = importlib.import_module(f"course_grading.bugs.{assignment}").BUGS
    registry = grader.load(assignment)
    scores = {}
    for cell in source_notebook(assignment).cells:
        role = nbgrader_role(cell)
        if role.get("grade"):
            scores[role["grade_id"]] = float(role["points"])
    for name in bug_names:
        bug = bugs[name]
        if bug.fails_visible_check:
            scores[f"test_{bug.target}"] = 0.0
        scores[f"hidden_{bug.target}"] -= sum(c.points for c in registry.checks_of(bug.target)
                                              if c.name in bug.failing_hidden_checks)
    return scores


@pytest.fixture(scope="module")
def graded(course) -> Path:
    """Three submissions per assignment, autograded in one run each."""
    for assignment in ASSIGNMENTS:
        bugs = importlib.import_module(f"course_grading.bugs.{assignment}")
        buggy = with_solutions_replaced(
            source_notebook(assignment, course),
            {bugs.BUGS[name].target: bugs.BUGS[name].source for name in bugs.ONE_BUG_PER_FUNCTION},
        )
        submit(course, "reference", assignment, source_notebook(assignment, course))
        submit(course, "blank", assignment, nbformat.read(course / "exercises" / assignment / f"{assignment}.ipynb", 4))
        submit(course, "buggy", assignment, buggy)
        run_nbgrader(course, "autograde", assignment)
    return course


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_reference_solution_gets_full_marks(graded, assignment):
    with Gradebook(f"sqlite:///{graded / 'gradebook.db'}") as gradebook:
        submission = gradebook.find_submission(assignment, "reference")
        assert submission.max_score > 0
        assert submission.score == submission.max_score


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_untouched_release_gets_zero(graded, assignment):
    scores = cell_scores(graded, assignment, "blank")
    assert scores and all(score == 0 for score in scores.values()), scores


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_each_bug_costs_exactly_the_points_of_the_checks_it_breaks(graded, assignment):
    bugs = importlib.import_module(f"course_grading.bugs.{assignment}")
    assert cell_scores(graded, assignment, "buggy") == expected_scores_with_bugs(assignment, bugs.ONE_BUG_PER_FUNCTION)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_feedback_names_failed_checks_without_their_code(graded, assignment):
    run_nbgrader(graded, "generate_feedback", assignment)
    pages = {student: graded / "feedback" / student / assignment / f"{assignment}.html"
             for student in ("reference", "blank", "buggy")}
    texts = {student: unescape(re.sub(r"<[^>]+>", "", page.read_text())) for student, page in pages.items()}
    assert "FAILED" in texts["buggy"] and "expected" in texts["buggy"]
    # Not even the reference student, whose submitted notebook holds the hidden checks, sees their code.
    for student, text in texts.items():
        leaked = [line for line in hidden_check_lines(assignment) if line in text]
        assert leaked == [], f"hidden-check code reached {student}'s feedback: {leaked[:3]}"
    # Neither the untouched release nor a wrong solution sees any solution or hidden-check text.
    from course_grading.instructor import student_edition

    assert student_edition.audit([graded / "feedback" / "blank", graded / "feedback" / "buggy"]) == []
