"""One module per assignment, named after it: its deliberately wrong solutions (``BUGS``, ``ONE_BUG_PER_FUNCTION``)."""

from course_grading import course_folder
from course_grading.course import source_notebook

# The course being graded holds the modules (a copy of the course may add an assignment).
__path__.insert(0, str(course_folder("bugs")))

from typing import NamedTuple


class Bug(NamedTuple):
    """A deliberately wrong ``source`` of ``target``; it must lose exactly ``failing_hidden_checks``."""

    target: str
    source: str
    failing_hidden_checks: frozenset[str]
    fails_visible_check: bool


def given_code(assignment: str, target: str) -> str:
    """The read-only cell ``given_<target>`` of a diagnosis task: the buggy code exactly as students get it.

    A submission that hands it in unchanged is one of the task's bugs, written once, in the notebook.
    """
    cells = source_notebook(assignment).cells
    return next(c.source for c in cells if c.metadata.get("nbgrader", {}).get("grade_id") == f"given_{target}")
