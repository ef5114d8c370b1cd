"""nbgrader configuration for the course: run nbgrader commands from the repository root."""

import logging
import os
import warnings

from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    ClearOutput,
    DeduplicateIds,
    IgnorePattern,
    LimitOutput,
    OverwriteKernelspec,
    SaveAutoGrades,
)

c = get_config()  # noqa: F821 (provided by nbgrader)

course_root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.root = course_root
c.CourseDirectory.course_id = "normalizing_flows"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(course_root, "gradebook.db")

# The hidden checks are instructor-only: the package course_grading (tests/hidden, installed by
# requirements.txt). The hidden part of each check cell imports its grader; this variable names the
# course whose checks it grades (the kernels of source notebooks run by hand inherit it).
os.environ["COURSE_GRADING_ROOT"] = course_root
from course_grading.engine.outside_kernel import ForgetDuplicatedCells, GradeOutsideKernel, RestoreHiddenTests  # noqa: E402
from sqlalchemy.exc import SAWarning  # noqa: E402

# A student who deletes, edits or duplicates a check cell gets it back as the instructor wrote it.
c.Autograde.sanitize_preprocessors = [
    ClearOutput,
    DeduplicateIds,
    ForgetDuplicatedCells,
    OverwriteKernelspec,
    RestoreHiddenTests,
    CheckCellMetadata,
]
c.RestoreHiddenTests.add_missing_cells = True

# nbgrader's Gradebook.add_submission builds a submission's notebooks and grades attached to the
# new submission and adds the submission to the session only after the loop; with SQLAlchemy 2
# (no cascade along backrefs) the autoflush that the loop triggers warns that these objects are
# "not in session". They are added, with everything attached, right after, so nothing is lost:
# the warning is harmless and is silenced exactly, the first autograde of every student printed it.
warnings.filterwarnings("ignore", category=SAWarning,
                        message=r"Object of type <Submitted(Assignment|Notebook)> not in session")

c.Autograde.autograde_preprocessors = [
    # In place of nbgrader's Execute (no kernel is started): the student's cells, then every check
    # cell, each run in a process of its own forked by the check server (tests/hidden/engine/check_server.py).
    GradeOutsideKernel,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.GradeOutsideKernel.timeout = 120  # seconds for all the student's own cells

# `nbgrader zip_collect <assignment>` collects the notebooks in the zip files (and loose notebooks) put in
# downloaded/<assignment>/archive/. A notebook's file name must be <student_id>--<notebook>.ipynb, e.g.
# alice--ex01_change_of_variables.ipynb; the folders around it do not matter. A file whose name does not
# match (a readme, a macOS "._" copy) is skipped with a warning. See the instructor's guide.
c.FileNameCollectorPlugin.named_regexp = r".*/(?P<student_id>[A-Za-z0-9][\w.@+-]*?)--(?P<file_id>\w+\.ipynb)$"


class ForcedRemovalIsInformation(logging.Filter):
    """``--force`` logs "Removing existing assignment/notebook" as a warning although it was asked
    for: ``exercises/`` is committed, so the README's first command regenerates it (to the same
    bytes) with ``--force``, and autograde and feedback use ``--force`` to grade again. Logged as
    information instead, so that a warning in the log always means something to look at."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and record.getMessage().startswith("Removing existing "):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


for app in ("GenerateAssignmentApp", "AutogradeApp", "GenerateFeedbackApp"):
    logging.getLogger(app).addFilter(ForcedRemovalIsInformation())
