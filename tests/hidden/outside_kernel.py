"""nbgrader preprocessors that grade every check cell outside the student's kernel.

Inside the notebook's kernel the student's code can do anything: replace ``torch.allclose``, kill
the kernel (after which nbgrader would throw away the whole notebook), print megabytes or write
warnings to stderr (which nbgrader scores as a failure). So ``nbgrader autograde`` (configured in
``nbgrader_config.py``) runs the kernel on the student's own cells only, and then:

* :class:`GradeOutsideKernel` sends each grade cell, together with the student's cells above it,
  to ``check_server.py``, which runs it in a fresh forked process and reports; the cell's outputs
  become that report: for a visible check its prints or its error, for a hidden check one line per
  check and the points earned as the cell's value (nbgrader's partial credit). The hidden part of
  the cell's source is left out of the graded notebook, so the feedback never shows it.

:class:`HideGradeCells` runs before the kernel and :class:`SafeExecute` replaces nbgrader's
``Execute`` so that a dead kernel costs the cells it did not run, not the notebook.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode
from nbformat.v4 import new_output
from nbgrader.preprocessors import Execute, NbGraderPreprocessor

HERE = Path(__file__).resolve().parent

STASH = "course_graded_source"
PLACEHOLDER = "# graded outside the notebook's kernel"
HIDDEN_NOTE = "# (the hidden checks of this cell ran here; their report is below)\n"
HIDDEN_CALL = re.compile(r"""grade\(\s*["'](\w+)["']\s*,\s*["'](\w+)["']""")
HIDDEN_PART = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS\n?", re.DOTALL)


def is_grade_cell(cell: NotebookNode) -> bool:
    role = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and role.get("grade", False) and not role.get("solution", False)


class ForgetDuplicatedCells(NbGraderPreprocessor):
    """After nbgrader's ``DeduplicateIds``: make a duplicated check cell an ordinary cell.

    ``DeduplicateIds`` empties the duplicate's nbgrader metadata, which nbgrader's own schema
    check then takes for an outdated notebook format, stopping the grading of every student.
    """

    def preprocess_cell(self, cell, resources, index):
        if cell.metadata.get("nbgrader") == {}:
            del cell.metadata["nbgrader"]
        return cell, resources


class HideGradeCells(NbGraderPreprocessor):
    """Before the kernel runs: set every grade cell's source aside, so the kernel never runs a check."""

    def preprocess_cell(self, cell, resources, index):
        if is_grade_cell(cell):
            cell.metadata[STASH] = cell.source
            cell.source = PLACEHOLDER
        return cell, resources


class SafeExecute(Execute):
    """nbgrader's ``Execute``, except that a kernel that dies leaves the cells it ran as they are.

    No grade depends on the kernel: it only gives the feedback the outputs of the student's own
    cells. ``batch_grade.py --without-kernel`` sets ``COURSE_AUTOGRADE_WITHOUT_KERNEL`` to skip it.
    """

    def preprocess(self, nb, resources=None, km=None):
        if os.environ.get("COURSE_AUTOGRADE_WITHOUT_KERNEL"):
            return nb, resources
        try:
            return super().preprocess(nb, resources, km)
        except DeadKernelError as error:
            self.log.warning("The kernel died while running the student's cells: %s", error)
            return nb, resources


class CapOutputSize(NbGraderPreprocessor):
    """Cut each printed output to ``limit`` characters: a student's megabytes of prints must not
    reach the gradebook or the feedback (nbgrader's ``LimitOutput`` counts lines, not characters)."""

    limit = 20_000

    def preprocess_cell(self, cell, resources, index):
        for output in cell.get("outputs", []):
            if output.output_type == "stream" and len(output.text) > self.limit:
                cut = len(output.text) - self.limit
                output.text = output.text[: self.limit] + f"\n... ({cut} more characters not shown)\n"
        return cell, resources


class CheckServer:
    """The check server: the batch command's shared one when ``COURSE_CHECK_SERVER`` names its
    socket, else a ``check_server.py`` process of this nbgrader run, started on first use."""

    _requests = None
    _replies = None

    @classmethod
    def ask(cls, request: dict) -> dict:
        if cls._requests is None:
            cls._connect()
        cls._requests.write(json.dumps(request) + "\n")
        cls._requests.flush()
        return json.loads(cls._replies.readline())

    @classmethod
    def _connect(cls) -> None:
        address = os.environ.get("COURSE_CHECK_SERVER")
        if address:
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            connection.connect(address)
            cls._requests, cls._replies = connection.makefile("w"), connection.makefile("r")
            return
        process = subprocess.Popen([sys.executable, str(HERE / "check_server.py")],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        atexit.register(process.kill)
        cls._requests, cls._replies = process.stdin, process.stdout
        json.loads(cls._replies.readline())  # {"ready": true}


class GradeOutsideKernel(NbGraderPreprocessor):
    """After the kernel: put each grade cell's source back and fill its outputs from the check server."""

    def preprocess(self, nb, resources):
        cwd = resources.get("metadata", {}).get("path") or "."
        student_cells: list[str] = []
        for cell in nb.cells:
            if is_grade_cell(cell):
                source = cell.metadata.pop(STASH, cell.source)
                cell.outputs = self.grade(source, list(student_cells), cwd)
                # What the feedback shows of the cell: its visible part; the checks' code stays secret.
                cell.source = HIDDEN_PART.sub(HIDDEN_NOTE, source)
                cell.execution_count = None
            elif cell.cell_type == "code":
                student_cells.append(cell.source)
        return nb, resources

    def grade(self, source: str, student_cells: list[str], cwd: str) -> list[NotebookNode]:
        outputs = []
        visible = HIDDEN_PART.sub("", source)
        result = CheckServer.ask({"kind": "visible", "cells": student_cells, "source": visible, "cwd": cwd})
        if result.get("stdout"):
            outputs.append(new_output("stream", name="stdout", text=result["stdout"]))
        if not result["passed"]:
            error = result.get("error", "Error")
            outputs.append(new_output("error", ename=error, evalue=result["message"],
                                      traceback=[f"{error}: {result['message']}"]))
            return outputs
        call = HIDDEN_CALL.search(source)
        if call:
            assignment, target = call.groups()
            result = CheckServer.ask({"kind": "hidden", "assignment": assignment, "target": target,
                                      "cells": student_cells, "cwd": cwd})
            outputs.append(new_output("stream", name="stdout", text=result["report"]))
            outputs.append(new_output("execute_result", data={"text/plain": f"{result['points']:g}"},
                                      execution_count=None))
        return outputs
