"""The course's grading code, one sub-package per role (instructor-only).

* ``engine``: what runs checks: the grader, the check server that forks a process per check, the
  shell that runs a student's cells, nbgrader's preprocessors that grade outside the kernel;
* ``checks``: one module per assignment, named after it, holding its ``REGISTRY`` of hidden checks;
* ``bugs``: one module per assignment, named after it, holding its deliberately wrong solutions;
* ``instructor``: the commands, batch grading of a class and the student edition.

A module's role is its folder. The course being graded is the one ``nbgrader_config.py`` names in
``COURSE_GRADING_ROOT``; its ``tests/hidden/checks`` and ``tests/hidden/bugs`` come first, so that
an assignment added to a copy of the course is graded from that copy.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent


def course_folder(role: str) -> Path:
    """The folder of ``role`` (``checks`` or ``bugs``) in the course being graded."""
    root = os.environ.get("COURSE_GRADING_ROOT")
    return (Path(root) / "tests" / "hidden" / role) if root else PACKAGE_ROOT / role


def assignments_with(role: str) -> list[str]:
    """The assignments that have a module in the folder of ``role``."""
    return sorted(p.stem for p in course_folder(role).glob("*.py") if p.stem != "__init__")
