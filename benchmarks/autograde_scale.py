"""How fast a whole class is graded: submissions per minute with one worker and with two.

For each assignment, makes N synthetic submissions in a scratch copy of the course — a mix of
correct ones (the source notebook), partly wrong ones (one deliberate bug from the assignment's
bug list) and broken ones (every solution raises) — and grades them with
``tests/hidden/instructor/batch_grade.py``, first with one worker (SQLite), then with two (PostgreSQL).

Target (from the issue): 100 submissions of one assignment in under 5 minutes on two cores.

Usage:  python benchmarks/autograde_scale.py [--submissions 100] [--assignments ex01_change_of_variables]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]  # the tests' helpers for synthetic submissions

from course_notebooks import (  # noqa: E402
    assignments,
    copy_course,
    solution_ids,
    source_notebook,
    submit,
    with_solutions_replaced,
)


def make_submissions(course: Path, assignment: str, count: int) -> dict[str, int]:
    """60% correct, 30% with one bug, 10% broken; returns how many of each."""
    notebook = source_notebook(assignment)
    bugs = list(importlib.import_module(f"course_grading.bugs.{assignment}").BUGS.values())
    broken = with_solutions_replaced(notebook, {
        target: f"def {target}(*args, **kwargs):\n    raise RuntimeError('broken submission')"
        for target in solution_ids(notebook)})
    kinds = {"correct": 0, "one bug": 0, "broken": 0}
    for index in range(count):
        if index % 10 < 6:
            kind, submission = "correct", notebook
        elif index % 10 < 9:
            bug = bugs[index % len(bugs)]
            kind, submission = "one bug", with_solutions_replaced(notebook, {bug.target: bug.source})
        else:
            kind, submission = "broken", broken
        kinds[kind] += 1
        submit(course, f"student{index:03d}", assignment, submission)
    return kinds


def grade(course: Path, assignment: str, workers: int) -> tuple[float, dict]:
    command = [sys.executable, str(ROOT / "tests" / "hidden" / "instructor" / "batch_grade.py"), assignment,
               "--workers", str(workers), "--force"]
    start = time.perf_counter()
    subprocess.run(command, cwd=course, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    summary = json.loads((course / "grading" / f"{assignment}.json").read_text())
    statuses: dict[str, int] = {}
    for result in summary.values():
        statuses[result["status"]] = statuses.get(result["status"], 0) + 1
    return seconds, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=100)
    parser.add_argument("--assignments", nargs="*", default=assignments())
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPU cores; {args.submissions} submissions per assignment")
    for assignment in args.assignments:
        with tempfile.TemporaryDirectory(prefix="autograde-scale-") as scratch:
            os.chmod(scratch, 0o755)  # the PostgreSQL server runs as its own user when we are root
            course = copy_course(Path(scratch), [])
            kinds = make_submissions(course, assignment, args.submissions)
            print(f"{assignment}: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items()))
            for workers in args.workers:
                seconds, statuses = grade(course, assignment, workers)
                rate = args.submissions / seconds * 60
                print(f"  {workers} worker{'s' if workers > 1 else ' '}: {seconds:6.1f} s, {rate:5.1f} submissions/min, "
                      f"statuses {statuses}", flush=True)


if __name__ == "__main__":
    main()
