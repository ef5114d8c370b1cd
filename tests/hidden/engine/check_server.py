"""The trusted side of grading: runs a submission's cells and each grade cell in forked processes.

Started once per ``nbgrader autograde`` run (see ``outside_kernel.py``), or once per class by
``batch_grade.py`` (``--socket PATH``), it imports torch, IPython and the hidden checks before any
student code exists, then answers one JSON request per line (on stdin, or on each socket connection):

    {"kind": "cells", "cells": [...], "cwd": "...", "time_limit": 120}
    {"kind": "visible", "cells": [...], "source": "...", "cwd": "..."}
    {"kind": "hidden", "cells": [...], "assignment": "...", "target": "...", "cwd": "..."}

For each it forks a child that runs the student's cells (``cells``, the notebook's non-grade code
cells, up to the grade cell for a check) through one IPython shell (``cell_shell.py``), as the
student's kernel did. A "cells" request reports each cell's outputs for the graded notebook
(it takes the place of the kernel nbgrader would start). A check request then runs either the
visible check ``source`` or one hidden check, and reports how it ended, a
:class:`~course_grading.engine.grader.Status` (a hidden request runs each check of its target so,
and its reply lists every check's status). The child's stdout and stderr go nowhere, so prints of any size and
warnings cost nothing; a child that crashes (``os._exit``, a segfault, memory exhaustion) or
overruns its time is reported as such and takes nothing else with it. Whatever the student's
code changes in torch, numpy, the self-checks or the grader is undone before a check compares
anything, and a check during which such a change happens fails as tampering.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import math
import os
import random
import resource
import select
import signal
import socket
import sys
import time
import traceback
import types

import numpy
import torch
import torch.nn.functional
import torch.testing

import course_pkg.testing
from course_grading import assignments_with
from course_grading.engine import expectations, grader
from course_grading.engine.cell_shell import CellShell
from course_grading.engine.grader import Status

# Seconds one check (or a visible check cell) may take; an instructor can change it for a slow machine.
TIME_LIMIT_SECONDS = float(os.environ.get("COURSE_CHECK_TIME_LIMIT", "20"))
MEMORY_LIMIT_BYTES = 6 * 1024**3
GRADER_FAILED = 70  # the exit status of a child in which the grader itself failed (EX_SOFTWARE)
OUTPUT_LIMIT_CHARACTERS = 4000
PROTECTED = [builtins, math, random, numpy, numpy.random, torch, torch.Tensor, torch.linalg, torch.func,
             torch.testing, torch.nn.functional, torch.autograd, course_pkg.testing, grader, expectations,
             *(grader.load_module(assignment) for assignment in assignments_with("checks"))]


def snapshot() -> list[dict]:
    return [dict(vars(namespace)) for namespace in PROTECTED]


def undo_changes(clean: list[dict]) -> list[str]:
    """Put every protected namespace back as it was in ``clean``; name what had changed."""
    changed = []
    for namespace, original in zip(PROTECTED, clean):
        current = vars(namespace)
        label = getattr(namespace, "__name__", str(namespace))
        for name in set(current) | set(original):
            if name in original and current.get(name, _MISSING) is original[name]:
                continue
            if name not in original and isinstance(current[name], types.ModuleType):
                continue  # a submodule imported on first use, as torch and numpy do
            if name.startswith("__") and name not in ("__import__", "__build_class__"):
                continue  # interpreter bookkeeping (e.g. __warningregistry__), not a test's tool
            changed.append(f"{label}.{name}")
            with contextlib.suppress(AttributeError, TypeError):
                if name in original:
                    setattr(namespace, name, original[name])
                else:
                    delattr(namespace, name)
    return sorted(changed)


_MISSING = object()


SHELL: CellShell | None = None  # created by main(), before any student code runs


def run_student_cells(cells: list[str]) -> dict:
    """The namespace the student's cells leave, each run as in the notebook (a cell that fails is shown, not fatal)."""
    for source in cells:
        SHELL.run(source)
    return SHELL.user_ns


def run_visible(request: dict, namespace: dict) -> dict:
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(io.StringIO()):
            exec(compile(request["source"], "<check cell>", "exec"), namespace)
    except BaseException as error:
        status = Status.FAILED if isinstance(error, AssertionError) else Status.ERROR
        return {"status": status, "error": type(error).__name__, "message": str(error)[:OUTPUT_LIMIT_CHARACTERS],
                "stdout": output.getvalue()[:OUTPUT_LIMIT_CHARACTERS]}
    return {"status": Status.PASSED, "stdout": output.getvalue()[:OUTPUT_LIMIT_CHARACTERS]}


def run_hidden(request: dict, namespace: dict) -> dict:
    registry = grader.load(request["assignment"])
    check = next(c for c in registry.checks if c.name == request["check"])
    if check.target not in namespace:
        return {"status": Status.MISSING, "message": grader.missing(check.target)}
    outcome = grader.run_check(check, namespace[check.target], registry.forbidden.get(check.target, []))
    return {"status": outcome.status, "message": outcome.message}


def grade_target(request: dict, clean: list[dict]) -> dict:
    """All hidden checks of one target, each in its own child: the report and the points."""
    outcomes = []
    for check in grader.load(request["assignment"]).checks_of(request["target"]):
        result = serve_one({**request, "kind": "check", "check": check.name}, clean)
        outcomes.append(grader.Outcome(check, Status(result["status"]), result.get("message", "")))
    return {"report": grader.report(request["target"], outcomes), "points": sum(o.points for o in outcomes),
            "statuses": {o.check.name: o.status for o in outcomes}}


def child(request: dict, clean: list[dict], report_fd: int) -> None:
    """Runs in the forked process: never returns."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    result = {"status": Status.GRADER_FAILED, "message": "the grader failed before it could report"}
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
        os.chdir(request["cwd"])
        if request["kind"] == "cells":
            report_cell_outputs(request["cells"], report_fd)  # never returns
        namespace = run_student_cells(request["cells"])
        undo_changes(clean)  # top-level changes are undone; changes during the check below fail it
        result = run_visible(request, namespace) if request["kind"] == "visible" else run_hidden(request, namespace)
        changed = undo_changes(clean)
        if changed:
            result = {"status": Status.TAMPERED,
                      "message": f"your code replaced {', '.join(changed[:3])} while being checked; "
                                 "the check does not count"}
    except BaseException:
        if request["kind"] == "cells":  # a check's report would be read as a cell's outputs: end without one
            os._exit(GRADER_FAILED)
        result = {"status": Status.GRADER_FAILED,
                  "message": "the grader failed: " + traceback.format_exc(limit=1)[-300:]}
    with os.fdopen(report_fd, "w") as report:
        report.write(json.dumps(result) + "\n")
    os._exit(0)


def report_cell_outputs(cells: list[str], report_fd: int) -> None:
    """Runs in the forked process for a "cells" request: one JSON line of outputs per cell, as each finishes."""
    with os.fdopen(report_fd, "w") as report:
        for source in cells:
            report.write(json.dumps(SHELL.run(source), default=str) + "\n")  # str: odd display metadata
            report.flush()
    os._exit(0)


def serve_one(request: dict, clean: list[dict]) -> dict:
    """Fork a child for ``request`` and wait for its report, or for its time limit, or for it to crash."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        child(request, clean, write_fd)
    os.close(write_fd)
    time_limit = request.get("time_limit", TIME_LIMIT_SECONDS)
    expected = len(request["cells"]) if request["kind"] == "cells" else 1
    report, stopped = read_report(pid, read_fd, time_limit + 5, expected)
    lines = [json.loads(line) for line in report.split(b"\n")[:-1]]  # a crash may cut the last line
    if len(lines) == expected:  # a complete report stands, whatever the process did after it
        return {"outputs": lines, "stopped": None} if request["kind"] == "cells" else lines[0]
    if stopped == "timeout":
        message = f"took longer than {time_limit:g} s and was stopped"
    else:
        message = f"crashed: the process running your code {stopped or 'exited before it finished'}"
    if request["kind"] == "cells":
        return {"outputs": lines, "stopped": message}
    return {"status": Status.TIMEOUT if stopped == "timeout" else Status.CRASHED, "message": message}


def read_report(pid: int, read_fd: int, seconds: float, lines: int) -> tuple[bytes, str | None]:
    """What the child wrote before it ended, and ``None``, or "timeout", or how it crashed; reaps the child.

    Reading stops at the end of the pipe or once ``lines`` whole lines have come: a process that the
    student's code forked holds the pipe open, and it must not hold the report back.
    """
    deadline = time.monotonic() + seconds
    chunks = []
    with os.fdopen(read_fd, "rb") as pipe:
        while sum(chunk.count(b"\n") for chunk in chunks) < lines:
            ready, _, _ = select.select([pipe], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return b"".join(chunks), "timeout"
            chunk = pipe.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return b"".join(chunks), f"was killed by signal {os.WTERMSIG(status)}"
    if os.WEXITSTATUS(status) != 0:
        return b"".join(chunks), f"exited with code {os.WEXITSTATUS(status)}"
    return b"".join(chunks), None


def warm_up() -> None:
    """Trigger torch's lazy imports now: some of them rebind attributes of ``torch`` (importing
    ``torch._dynamo`` wraps ``torch.manual_seed``), which must not look like a student's doing."""
    import torch._dynamo  # noqa: F401

    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    torch.func.vmap(torch.func.jacrev(torch.sin))(x[None].detach())
    torch.autograd.functional.jacobian(torch.sin, x.detach())
    torch.sin(x).sum().backward()
    torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2)).log_prob(torch.zeros(2))


def serve(requests, replies, clean: list[dict]) -> None:
    for line in requests:
        request = json.loads(line)
        reply = grade_target(request, clean) if request["kind"] == "hidden" else serve_one(request, clean)
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def serve_socket(path: str, clean: list[dict]) -> None:
    """Answer many nbgrader processes (one per student, as the batch command runs them) on a Unix
    socket, so torch and the checks are imported once per class instead of once per student."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # connection handlers need no reaping
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(64)
        print(json.dumps({"ready": True}), flush=True)
        while True:
            connection, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                with connection, connection.makefile("r") as requests, connection.makefile("w") as replies:
                    serve(requests, replies, clean)
                os._exit(0)
            connection.close()


def main() -> None:
    global SHELL
    torch.set_num_threads(1)
    warm_up()
    SHELL = CellShell.create()
    clean = snapshot()
    if len(sys.argv) == 3 and sys.argv[1] == "--socket":
        serve_socket(sys.argv[2], clean)
    else:
        print(json.dumps({"ready": True}), flush=True)
        serve(sys.stdin, sys.stdout, clean)


if __name__ == "__main__":
    main()
