"""The instructor's commands: ``python -m course_grading.instructor.batch_grade`` and ``.student_edition``."""
