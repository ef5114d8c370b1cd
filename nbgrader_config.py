"""nbgrader configuration for the course: run nbgrader commands from the repository root."""

import os

c = get_config()  # noqa: F821 (provided by nbgrader)

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(c.CourseDirectory.root, "gradebook.db")

# The hidden part of each autograder cell imports the instructor-only checks from tests/hidden;
# the notebook kernels inherit this variable from the nbgrader process.
os.environ["COURSE_GRADING_ROOT"] = c.CourseDirectory.root

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ExecutePreprocessor.timeout = 120
