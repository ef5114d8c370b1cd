"""The check server: the student's own cells (a "cells" request) and one hidden check (a "check"
request), each run in a forked process, which is the one place a time limit is kept."""

from __future__ import annotations

import time

import pytest

from course_grading.engine import check_server
from course_grading.engine.cell_shell import CellShell
from course_grading.engine.grader import Status


@pytest.fixture(scope="module")
def serve():
    check_server.SHELL = CellShell.create()
    clean = check_server.snapshot()

    def run_cells(cells: list[str], cwd: str = ".", time_limit: float = 10) -> dict:
        return check_server.serve_one({"kind": "cells", "cells": cells, "cwd": cwd, "time_limit": time_limit}, clean)

    return run_cells


def test_each_cell_gets_its_prints_its_value_and_its_error(serve):
    result = serve(["x = 6\nprint('hello')", "x * 7", "%time y = 1", "1 / 0"])
    assert result["stopped"] is None
    printed, value, timed, failed = result["outputs"]
    assert printed == [{"output_type": "stream", "name": "stdout", "text": "hello\n"}]
    assert value[0]["output_type"] == "execute_result" and value[0]["data"]["text/plain"] == "42"
    assert "Wall time" in timed[0]["text"]
    assert failed[0]["output_type"] == "error" and failed[0]["ename"] == "ZeroDivisionError"


def test_a_cell_that_kills_the_process_keeps_the_outputs_above_it(serve):
    result = serve(["print('before')", "import os\nos._exit(3)", "print('after')"])
    assert result["outputs"] == [[{"output_type": "stream", "name": "stdout", "text": "before\n"}]]
    assert result["stopped"] == "crashed: the process running your code exited with code 3"


def test_cells_that_run_too_long_are_stopped(serve):
    result = serve(["print('quick')", "while True:\n    pass"], time_limit=1)
    assert len(result["outputs"]) == 1 and result["stopped"] == "took longer than 1 s and was stopped"


def test_a_failure_of_the_grader_is_never_read_as_a_cells_outputs(serve, tmp_path):
    result = serve(["print('never runs')"], cwd=str(tmp_path / "missing"))
    assert result["outputs"] == []
    assert result["stopped"] == f"crashed: the process running your code exited with code {check_server.GRADER_FAILED}"


def test_a_process_the_cells_leave_behind_does_not_hold_the_report_back(serve):
    """A forked process inherits the report pipe; the cells' outputs come when the last cell ends, not at its exit."""
    linger = "import os, time\nif os.fork() == 0:\n    time.sleep(20)\n    os._exit(0)"
    started = time.monotonic()
    result = serve([linger, "print('after')"], time_limit=5)
    assert result["stopped"] is None
    assert result["outputs"][1] == [{"output_type": "stream", "name": "stdout", "text": "after\n"}]
    assert time.monotonic() - started < 5, "the report waited for the process left behind"


def test_a_hanging_hidden_check_is_stopped_and_reported(serve):
    """The forked child is the one isolation: a check that never ends is stopped there, and says so."""
    hang = "def numerical_jacobian(f, x, eps=1e-6):\n    while True:\n        try:\n            pass\n        except Exception:\n            pass"
    check = "jacobian_of_linear_maps"
    request = {"kind": "check", "cells": [hang], "cwd": ".", "time_limit": 0.5,
               "assignment": "ex01_change_of_variables", "check": check}
    result = check_server.serve_one(request, check_server.snapshot())
    assert result == {"status": Status.TIMEOUT, "message": "took longer than 0.5 s and was stopped"}
