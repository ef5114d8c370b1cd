"""One module per assignment, named after it: its deliberately wrong solutions (``BUGS``, ``ONE_BUG_PER_FUNCTION``)."""

from course_grading import course_folder

# The course being graded holds the modules (a copy of the course may add an assignment).
__path__.insert(0, str(course_folder("bugs")))

from typing import NamedTuple


class Bug(NamedTuple):
    """A deliberately wrong ``source`` of ``target``; it must lose exactly ``failing_hidden_checks``."""

    target: str
    source: str
    failing_hidden_checks: frozenset[str]
    fails_visible_check: bool
