"""Autograding that an instructor can trust: broken, hostile and odd submissions, graded in one real
``nbgrader autograde`` run with a real gradebook. Each loses only the points of the checks it
breaks, gets a readable message in its feedback, and never stops the grading of the others.

Every submission starts from self-contained correct solutions of ex01 (no function calls another,
so one function's trouble cannot reach another's points) and changes one thing.
"""

from __future__ import annotations

import os
import re
from html import unescape
from pathlib import Path

import nbformat
import pytest

from course_notebooks import (
    cell_scores,
    copy_course,
    nbgrader_role,
    run_nbgrader,
    source_notebook,
    submit,
    with_solutions_replaced,
)

pytestmark = pytest.mark.slow
ASSIGNMENT = "ex01_change_of_variables"
TIME_LIMIT = 5  # seconds per check: the hanging submission is stopped quickly, a correct one never is

CORRECT = {
    "numerical_jacobian": '''
def numerical_jacobian(f, x, eps=1e-6):
    columns = []
    for j in range(x.numel()):
        step = torch.zeros_like(x)
        step[j] = eps
        columns.append((f(x + step) - f(x - step)) / (2 * eps))
    return torch.stack(columns, dim=1)
''',
    "log_abs_det_jacobian": '''
def log_abs_det_jacobian(f, x):
    return torch.linalg.slogdet(torch.func.jacrev(f)(x)).logabsdet
''',
    "flow_log_prob": '''
def flow_log_prob(forward, base_log_prob, x):
    log_dets = torch.stack([torch.linalg.slogdet(torch.func.jacrev(lambda v: forward(v[None])[0])(row)).logabsdet
                            for row in x])
    return base_log_prob(forward(x)) + log_dets
''',
}
JACOBIAN = CORRECT["numerical_jacobian"]


def broken_jacobian(body: str, before: str = "") -> str:
    return f"{before}\ndef numerical_jacobian(f, x, eps=1e-6):\n" + "".join(f"    {line}\n" for line in body.splitlines())


# student -> (changes to the solution cells, the points numerical_jacobian's visible and hidden cells keep)
SUBMISSIONS = {
    "raises": ({"numerical_jacobian": broken_jacobian("raise ValueError('I give up')")}, (0, 0)),
    "hangs": ({"numerical_jacobian": broken_jacobian("while True:\n    pass")}, (0, 0)),
    "returns_nan": ({"numerical_jacobian": broken_jacobian("return torch.full((x.numel(), x.numel()), float('nan'), dtype=x.dtype)")}, (0, 1)),
    "wrong_shape": ({"numerical_jacobian": broken_jacobian("return torch.zeros(x.numel(), dtype=x.dtype)")}, (0, 0)),
    "wrong_dtype": ({"numerical_jacobian": JACOBIAN.replace("return torch.stack(columns, dim=1)",
                                                            "return torch.stack(columns, dim=1).float()")}, (0, 2)),
    "prints_megabytes": ({"numerical_jacobian": "print('x' * 5_000_000)\n" + JACOBIAN.replace(
        "    columns = []", "    print('y' * 1_000_000)\n    columns = []")}, (1, 4)),
    "warns_but_correct": ({"numerical_jacobian": "import sys, warnings\nwarnings.warn('top-level warning')\n"
                           "print('to stderr', file=sys.stderr)\n" + JACOBIAN.replace(
                               "    columns = []", "    warnings.warn('a warning at every call')\n"
                               "    print('more stderr', file=sys.stderr)\n    columns = []")}, (1, 4)),
    "renames_the_function": ({"numerical_jacobian": JACOBIAN.replace("def numerical_jacobian", "def my_jacobian")}, (0, 0)),
    "exits_the_process": ({"numerical_jacobian": broken_jacobian("os._exit(3)", before="import os")}, (0, 0)),
    "exhausts_memory": ({"numerical_jacobian": broken_jacobian("hog = []\nwhile True:\n    hog.append(torch.empty(2**28))")}, (0, 0)),
    "delegates_to_course_pkg": ({"numerical_jacobian": "from course_pkg.testing import numerical_jacobian\n"}, (1, 0)),
    "patches_the_checks": ({"numerical_jacobian": broken_jacobian(
        "torch.allclose = lambda *args, **kwargs: True\n"
        "import course_pkg.testing\n"
        "course_pkg.testing.assert_close = lambda *args, **kwargs: None\n"
        "return torch.zeros(x.numel(), x.numel(), dtype=x.dtype)")}, (0, 0)),
    "patches_at_top_level": ({"numerical_jacobian": broken_jacobian(
        "return torch.zeros(x.numel(), x.numel(), dtype=x.dtype)",
        before="import torch, course_pkg.testing\ntorch.allclose = lambda *a, **k: True\n"
               "course_pkg.testing.assert_close = lambda *a, **k: None")}, (0, 1)),
}
CELL_EDITS = ("edits_the_check_cells", "deletes_a_check_cell", "duplicates_a_check_cell")
# Correct submissions with cells of the student's own: (the solution cell they follow, or None for the
# notebook's end; their source). Their outputs must reach the feedback, and they must cost nothing.
OWN_CELLS = {
    "uses_magics_and_plots": ("numerical_jacobian", "%time J = numerical_jacobian(lambda v: 2 * v, torch.ones(2, dtype=torch.float64))\n"
                              "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nprint('my own check ran')\nJ"),
    "exits_in_its_last_cell": (None, "import os\nos._exit(1)"),
}


def notebook_for(student: str):
    notebook = with_solutions_replaced(source_notebook(ASSIGNMENT), CORRECT)
    if student == "correct":
        return notebook
    if student in SUBMISSIONS:
        return with_solutions_replaced(notebook, SUBMISSIONS[student][0])
    if student in OWN_CELLS:
        after, source = OWN_CELLS[student]
        notebook = with_solutions_replaced(notebook, {"numerical_jacobian": "%matplotlib inline\n" + JACOBIAN})
        anchor = [nbgrader_role(c).get("grade_id") for c in notebook.cells].index(after) + 1 if after else len(notebook.cells)
        notebook.cells.insert(anchor, nbformat.v4.new_code_cell(source))
        return notebook
    # The cell edits come with a wrong Jacobian: restoring the checks must keep it from scoring.
    notebook = with_solutions_replaced(notebook, {"numerical_jacobian": broken_jacobian("return torch.eye(x.numel(), dtype=x.dtype)")})
    checks = [c for c in notebook.cells if nbgrader_role(c).get("grade_id") in ("test_numerical_jacobian", "hidden_numerical_jacobian")]
    if student == "edits_the_check_cells":
        checks[0].source = "print('numerical_jacobian passes the visible checks')"
        checks[1].source = "4"
    elif student == "deletes_a_check_cell":
        notebook.cells.remove(checks[1])
    else:
        notebook.cells.insert(notebook.cells.index(checks[1]), nbformat.from_dict(checks[1]))
    return notebook


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> Path:
    course = copy_course(tmp_path_factory.mktemp("course"), [ASSIGNMENT])
    for student in [*SUBMISSIONS, *CELL_EDITS, *OWN_CELLS, "correct"]:
        submit(course, student, ASSIGNMENT, notebook_for(student))
    env = {**os.environ, "COURSE_CHECK_TIME_LIMIT": str(TIME_LIMIT)}
    run_nbgrader(course, "autograde", ASSIGNMENT, env=env)
    run_nbgrader(course, "generate_feedback", ASSIGNMENT)
    return course


def expected_scores(jacobian_points: tuple[int, int]) -> dict[str, float]:
    visible, hidden = jacobian_points
    return {"test_numerical_jacobian": float(visible), "hidden_numerical_jacobian": float(hidden),
            "test_log_abs_det_jacobian": 1.0, "hidden_log_abs_det_jacobian": 4.0,
            "test_flow_log_prob": 1.0, "hidden_flow_log_prob": 4.0}


def feedback(course: Path, student: str) -> str:
    """The text a student reads in their feedback page."""
    html = (course / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    return unescape(re.sub(r"<[^>]+>", "", html))


def test_a_correct_submission_gets_full_marks(graded):
    assert cell_scores(graded, ASSIGNMENT, "correct") == expected_scores((1, 4))


@pytest.mark.parametrize("student", SUBMISSIONS)
def test_each_submission_loses_only_the_points_it_should(graded, student):
    assert cell_scores(graded, ASSIGNMENT, student) == expected_scores(SUBMISSIONS[student][1])


@pytest.mark.parametrize("student, message", [
    ("raises", "your code raised ValueError: I give up"),
    ("hangs", f"took longer than {TIME_LIMIT} s"),
    ("returns_nan", "non-finite"),
    ("wrong_shape", "expected shape (1, 1), got (1,)"),
    ("wrong_dtype", "expected dtype torch.float64, got torch.float32"),
    ("renames_the_function", "no object named 'numerical_jacobian' was defined"),
    ("exits_the_process", "crashed"),
    ("delegates_to_course_pkg", "without course_pkg's reference implementation"),
    ("exhausts_memory", "your code raised"),
    ("patches_the_checks", "while being checked; the check does not count"),
])
def test_feedback_says_what_went_wrong(graded, student, message):
    assert message in feedback(graded, student)


@pytest.mark.parametrize("student", OWN_CELLS)
def test_cells_of_the_students_own_cost_nothing(graded, student):
    assert cell_scores(graded, ASSIGNMENT, student) == expected_scores((1, 4))


def test_feedback_shows_the_outputs_of_the_students_own_cells(graded):
    html = (graded / "feedback" / "uses_magics_and_plots" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    text = feedback(graded, "uses_magics_and_plots")
    assert "my own check ran" in text and "Wall time" in text  # a print and the %time magic
    assert "tensor([[2.0000, 0.0000]," in text  # the value of the cell's last expression
    assert html.count("data:image/png;base64,") == 1  # the figure
    assert "crashed: the process running your code exited with code 1" in feedback(graded, "exits_in_its_last_cell")


def test_huge_output_is_cut_short(graded):
    text = feedback(graded, "prints_megabytes")
    assert len(text) < 200_000 and "more characters not shown" in text


@pytest.mark.parametrize("student", CELL_EDITS)
def test_edited_deleted_or_duplicated_check_cells_are_restored(graded, student):
    scores = cell_scores(graded, ASSIGNMENT, student)
    assert scores["test_numerical_jacobian"] == 0.0
    assert scores["hidden_numerical_jacobian"] == 1.0  # the identity passes the shape check only


def test_grading_again_gives_the_same_scores_to_the_last_decimal(graded):
    before = {s: cell_scores(graded, ASSIGNMENT, s) for s in ("correct", "returns_nan", "patches_the_checks")}
    for student in before:
        run_nbgrader(graded, "autograde", ASSIGNMENT, "--student", student, "--force")
    assert {s: cell_scores(graded, ASSIGNMENT, s) for s in before} == before
