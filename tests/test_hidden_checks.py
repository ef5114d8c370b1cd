"""The hidden checks themselves, tested: the reference solution passes every one, the blank
release passes none, and each deliberately wrong solution fails exactly the checks it breaks."""

from __future__ import annotations

import importlib
import re

import pytest
import torch

from course_grading.engine import grader
from course_notebooks import (
    assignments, nbgrader_role, solution_ids, solution_namespace, source_notebook, visible_check_passes,
)

ASSIGNMENTS = assignments()


def bugs_of(assignment: str) -> dict:
    return importlib.import_module(f"course_grading.bugs.{assignment}").BUGS


def failing_checks(assignment: str, target: str, namespace: dict) -> set[str]:
    registry = grader.load(assignment)
    outcomes = [grader.run_check(c, namespace[target], registry.forbidden.get(target, []))
                for c in registry.checks_of(target)]
    return {o.check.name for o in outcomes if not o.passed}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_reference_solution_passes_every_check(assignment):
    namespace = solution_namespace(assignment)
    for target in solution_ids(source_notebook(assignment)):
        assert failing_checks(assignment, target, namespace) == set(), target
        assert visible_check_passes(assignment, f"test_{target}", namespace), target


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_solution_has_checks_worth_points(assignment):
    registry = grader.load(assignment)
    for target in solution_ids(source_notebook(assignment)):
        assert len(registry.checks_of(target)) >= 3, target
        assert set(bug.target for bug in bugs_of(assignment).values()) >= {target}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_blank_release_fails_every_check(assignment):
    targets = solution_ids(source_notebook(assignment))
    stub = "raise NotImplementedError()"
    blank = {t: f"def {t}(*args, **kwargs):\n    {stub}" for t in targets}
    namespace = solution_namespace(assignment, blank)
    registry = grader.load(assignment)
    for target in targets:
        assert failing_checks(assignment, target, namespace) == {c.name for c in registry.checks_of(target)}
        assert not visible_check_passes(assignment, f"test_{target}", namespace)


@pytest.mark.parametrize(
    "assignment, bug_name", [(a, name) for a in ASSIGNMENTS for name in bugs_of(a)]
)
def test_each_bug_fails_exactly_its_checks(assignment, bug_name):
    bug = bugs_of(assignment)[bug_name]
    namespace = solution_namespace(assignment, {bug.target: bug.source})
    assert failing_checks(assignment, bug.target, namespace) == set(bug.failing_hidden_checks)
    assert visible_check_passes(assignment, f"test_{bug.target}", namespace) != bug.fails_visible_check


def test_failure_messages_say_what_was_expected_and_what_came_back():
    bug = bugs_of("ex01_change_of_variables")["log_det_returns_determinant"]
    namespace = solution_namespace("ex01_change_of_variables", {bug.target: bug.source})
    check = next(c for c in grader.load("ex01_change_of_variables").checks
                 if c.name == "log_det_of_volume_preserving_and_scaling_maps")
    outcome = grader.run_check(check, namespace[bug.target])
    assert not outcome.passed
    assert "expected" in outcome.message and "got" in outcome.message and "largest error" in outcome.message


def test_grade_reports_points_and_survives_a_missing_function(capsys):
    namespace = solution_namespace("ex01_change_of_variables")
    assert grader.grade("ex01_change_of_variables", "flow_log_prob", namespace) == 4
    del namespace["flow_log_prob"]
    assert grader.grade("ex01_change_of_variables", "flow_log_prob", namespace) == 0
    report = capsys.readouterr().out
    assert "4 of 4 points" in report and "0 of 4 points" in report
    assert "no object named 'flow_log_prob' was defined" in report


def test_grading_is_deterministic():
    bug = bugs_of("ex01_change_of_variables")["log_prob_mixes_the_batch"]
    namespace = solution_namespace("ex01_change_of_variables", {bug.target: bug.source})
    registry = grader.load("ex01_change_of_variables")
    runs = [[grader.run_check(c, namespace[bug.target]).message for c in registry.checks_of(bug.target)]
            for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


def test_ex01_closed_form_jacobians_agree_with_autograd():
    checks = grader.load_module("ex01_change_of_variables")
    for d, seed in checks.SIZES_AND_SEEDS:
        generator = torch.Generator().manual_seed(seed)
        for map_ in checks.nonlinear_maps(d, generator):
            x = checks.point(d, generator)
            torch.testing.assert_close(map_.jacobian(x), torch.func.jacrev(map_.f)(x), atol=1e-12, rtol=1e-12)


GRADED_LIST = "**What the hidden checks grade**"


def task_text(notebook, target: str) -> str:
    """The markdown above ``target``'s solution cell, back to its section's heading: the task as the
    student reads it (a diagnosis task shows its given code between the heading and the task)."""
    index = next(i for i, c in enumerate(notebook.cells) if nbgrader_role(c).get("grade_id") == target)
    section = []
    for cell in reversed(notebook.cells[:index]):
        if cell.cell_type == "markdown":
            section.insert(0, cell.source)
            if re.search(r"^## ", cell.source, re.MULTILINE):
                break
    return "\n\n".join(section)


def as_read(markdown: str) -> str:
    """Words as a reader sees them: without code marks, every run of whitespace one space."""
    return " ".join(markdown.replace("`", "").split())


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_task_text_names_every_graded_property(assignment):
    """Each task ends with one bullet per hidden check, which states that check's property; the
    section's heading counts those points and the visible check's."""
    registry = grader.load(assignment)
    notebook = source_notebook(assignment)
    for target in solution_ids(notebook):
        task = task_text(notebook, target)
        assert GRADED_LIST in task, f"{target}: the task does not list what its hidden checks grade"
        graded = task.split(GRADED_LIST, 1)[1]
        bullets = [line for line in graded.splitlines() if line.startswith("- ")]
        checks = registry.checks_of(target)
        assert len(bullets) == len(checks), (target, len(bullets), [c.name for c in checks])
        for check in checks:
            assert as_read(check.description) in as_read(graded), (target, check.name, check.description)
        points = re.search(r"^## .*\((\d+) points\)", task, re.MULTILINE)
        assert points and int(points.group(1)) == sum(c.points for c in checks) + 1, target


def test_refused_reference_code_is_everything_course_pkg_defines_in_the_listed_modules():
    """ex03 and ex04 refuse every public class and function of the modules they list, so reference
    code added there later (the spline transformer, MADE, ...) is refused without an edit."""
    from course_pkg import nets
    from course_pkg.flows import autoregressive, coupling, transformers

    ex03, ex04 = grader.load_module("ex03_coupling"), grader.load_module("ex04_autoregressive")
    spline, helper = transformers.RationalQuadraticSpline, transformers.params_from_blocks
    assert {spline, helper, coupling.Coupling, nets.MLP} <= set(ex03.REGISTRY.forbidden["AffineCoupling"])
    assert {autoregressive.MADE, autoregressive.MaskedAutoregressive, autoregressive.hidden_degrees, spline} <= set(
        ex04.REGISTRY.forbidden["MAFLayer"])
    assert {autoregressive.MADE, autoregressive.MaskedLinear, spline, nets.MLP} <= set(ex04.REFERENCE_MODULES)
    assert all(isinstance(item, type) for item in ex04.REFERENCE_MODULES)
