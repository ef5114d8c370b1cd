"""nbgrader preprocessors that grade every check cell outside the student's process.

In a notebook kernel the student's code can do anything: replace ``torch.allclose``, kill the
kernel (after which nbgrader would throw away the whole notebook), print megabytes or write
warnings to stderr (which nbgrader scores as a failure). So ``nbgrader autograde`` (configured in
``nbgrader_config.py``) starts no kernel. :class:`GradeOutsideKernel` takes the place of nbgrader's
``Execute`` and sends the work to ``check_server.py``, which has torch imported once and forks a
fresh process for each request:

* the student's own cells are run as the kernel would run them (``cell_shell.py``), and their
  outputs go into the graded notebook; a process that dies costs the cells it did not finish, not
  the notebook;
* each grade cell runs, together with the student's cells above it, in a process of its own;
  the cell's outputs become its report: for a visible check its prints or its error, for a hidden
  check one line per check and the points earned as the cell's value (nbgrader's partial credit).
  The hidden part of the cell's source is left out of the graded notebook, so the feedback never
  shows it.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import socket
import subprocess
import sys

from nbformat import NotebookNode, from_dict
from nbformat.v4 import new_output
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor, OverwriteCells
from nbgrader.api import MissingEntry
from traitlets import Float

from course_grading.course import HIDDEN_PART
from course_grading.engine.grader import STATUS_KEY, Status

HIDDEN_NOTE = "# (the hidden checks of this cell ran here; their report is below)\n"
HIDDEN_CALL = re.compile(r"""grade\(\s*["'](\w+)["']\s*,\s*["'](\w+)["']""")


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


class RestoreHiddenTests(OverwriteCells):
    """nbgrader's ``OverwriteCells``, quiet about the one change every submission makes.

    A check cell's hidden part is cut out of the release, so in every submitted notebook the cell's
    source differs from the gradebook's, and ``OverwriteCells`` restores it with a warning,
    "Attribute 'checksum' for cell hidden_... has changed!", for every hidden cell of every student.
    Here a locked cell that is exactly its released form gets its hidden part back first, silently;
    a locked cell the student really edited is still restored with nbgrader's warning.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id is not None and cell.metadata["nbgrader"].get("locked"):
            source_cell = self._source_cell(grade_id)
            if source_cell is not None and cell.source == released_source(source_cell.source):
                cell.source = source_cell.source
        return super().preprocess_cell(cell, resources, cell_index)

    def _source_cell(self, grade_id: str):
        try:
            return self.gradebook.find_source_cell(grade_id, self.notebook_id, self.assignment_id)
        except MissingEntry:
            return None


def released_source(source: str) -> str:
    """A cell's source as ``nbgrader generate_assignment`` releases it: without its hidden tests."""
    cell = NotebookNode(cell_type="code", source=source, metadata={})
    ClearHiddenTests()._remove_hidden_test_region(cell)
    return cell.source


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
        process = subprocess.Popen([sys.executable, "-m", "course_grading.engine.check_server"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        atexit.register(process.kill)
        cls._requests, cls._replies = process.stdin, process.stdout
        json.loads(cls._replies.readline())  # {"ready": true}


class GradeOutsideKernel(NbGraderPreprocessor):
    """In place of nbgrader's ``Execute``: the student's cells and every grade cell, run by the check server."""

    timeout = Float(120, help="seconds the student's own cells may take, all together").tag(config=True)

    def preprocess(self, nb, resources):
        cwd = resources.get("metadata", {}).get("path") or "."
        self.run_student_cells([cell for cell in nb.cells if cell.cell_type == "code" and not is_grade_cell(cell)], cwd)
        student_cells: list[str] = []
        for cell in nb.cells:
            if is_grade_cell(cell):
                cell.outputs, statuses = self.grade(cell.source, list(student_cells), cwd)
                cell.metadata[STATUS_KEY] = statuses
                # What the feedback shows of the cell: its visible part; the checks' code stays secret.
                cell.source = HIDDEN_PART.sub(HIDDEN_NOTE, cell.source)
                cell.execution_count = None
            else:
                cell.metadata.pop(STATUS_KEY, None)  # statuses are the grader's to record, never a submission's
                if cell.cell_type == "code":
                    student_cells.append(cell.source)
        return nb, resources

    def run_student_cells(self, cells: list[NotebookNode], cwd: str) -> None:
        """Give each of the student's cells the outputs it has when run in order from a fresh start."""
        result = CheckServer.ask({"kind": "cells", "cells": [cell.source for cell in cells], "cwd": cwd,
                                  "time_limit": self.timeout})
        for count, cell in enumerate(cells, start=1):
            done = count <= len(result["outputs"])
            cell.outputs = [from_dict(output) for output in result["outputs"][count - 1]] if done else []
            cell.execution_count = count if done else None
        if result["stopped"]:
            self.log.warning("The student's cells stopped early: %s", result["stopped"])
            unfinished = cells[len(result["outputs"])]
            unfinished.outputs.append(new_output("error", ename="Stopped", evalue=result["stopped"],
                                                 traceback=[f"This cell {result['stopped']}; the cells below it did not run."]))

    def grade(self, source: str, student_cells: list[str], cwd: str) -> tuple[list[NotebookNode], dict[str, str]]:
        """The check cell's outputs, and how each of its checks ended (``{"visible": status}``, plus
        one entry per hidden check)."""
        outputs = []
        visible = HIDDEN_PART.sub("", source)
        result = CheckServer.ask({"kind": "visible", "cells": student_cells, "source": visible, "cwd": cwd})
        if result.get("stdout"):
            outputs.append(new_output("stream", name="stdout", text=result["stdout"]))
        statuses = {"visible": Status(result["status"])}
        if statuses["visible"] is not Status.PASSED:
            error = result.get("error", "Error")
            outputs.append(new_output("error", ename=error, evalue=result["message"],
                                      traceback=[f"{error}: {result['message']}"]))
            return outputs, statuses
        call = HIDDEN_CALL.search(source)
        if call:
            assignment, target = call.groups()
            result = CheckServer.ask({"kind": "hidden", "assignment": assignment, "target": target,
                                      "cells": student_cells, "cwd": cwd})
            outputs.append(new_output("stream", name="stdout", text=result["report"]))
            outputs.append(new_output("execute_result", data={"text/plain": f"{result['points']:g}"},
                                      execution_count=None))
            statuses.update(result["statuses"])
        return outputs, statuses
