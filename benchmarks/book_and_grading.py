"""Build and grading speed, measured on this machine.

Reports
  * the cold build time of the book (a fresh copy, empty execution cache) and each chapter's
    execution time, then the time of a cached rebuild and how many notebooks it executed;
  * `nbgrader autograde` of ex01 over N copies of the reference solution: seconds per submission,
    next to the time to merely execute the same notebook once per submission (the ratio is the
    grading overhead).

Targets (from the issues): Chapter 1 executes in under 60 s on two cores; a cached rebuild
executes nothing; grading overhead under 1.5x.

Usage:  python benchmarks/book_and_grading.py [--submissions 10] [--skip-book]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "ex01_change_of_variables"


def timed(command: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return elapsed, result.stdout + result.stderr


def copy_course(destination: Path) -> Path:
    ignore = shutil.ignore_patterns("_build", ".venv", "__pycache__", "*.egg-info", "gradebook.db",
                                    "submitted", "autograded", "feedback", ".git")
    shutil.copytree(ROOT, destination, ignore=ignore)
    return destination


def benchmark_book(scratch: Path) -> None:
    course = copy_course(scratch / "book")
    build = [str(Path(sys.executable).with_name("jupyter-book")), "build", "."]
    cold, log = timed(build, course)
    executed = re.findall(r"(\S+): Executed notebook in ([\d.]+) seconds", log)
    print(f"book, cold build:   {cold:6.1f} s")
    for name, seconds in executed:
        print(f"  executed {name:40s} {float(seconds):6.1f} s")
    warm, log = timed(build, course)
    reexecuted = re.findall(r"Executed notebook in", log)
    print(f"book, cached build: {warm:6.1f} s, notebooks executed: {len(reexecuted)}")


def benchmark_grading(scratch: Path, submissions: int) -> None:
    course = copy_course(scratch / "grading")
    timed([sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT, "--force"], course)
    source = course / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    for index in range(submissions):
        folder = course / "submitted" / f"student{index:03d}" / ASSIGNMENT
        folder.mkdir(parents=True)
        shutil.copy(source, folder)

    grading, _ = timed([sys.executable, "-m", "nbgrader", "autograde", ASSIGNMENT], course)

    # The same notebook (hidden checks included), executed plainly in a fresh kernel each time.
    os.environ["COURSE_GRADING_ROOT"] = str(course)
    start = time.perf_counter()
    for _ in range(submissions):
        notebook = nbformat.read(source, as_version=4)
        NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(source.parent)}}).execute()
    executing = time.perf_counter() - start

    print(f"autograde {ASSIGNMENT}: {grading / submissions:5.2f} s per submission ({submissions} submissions)")
    print(f"execute the same notebook:  {executing / submissions:5.2f} s per submission")
    print(f"grading overhead: {grading / executing:.2f}x (target < 1.5x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=10)
    parser.add_argument("--skip-book", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPU cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as scratch:
        if not args.skip_book:
            benchmark_book(Path(scratch))
        benchmark_grading(Path(scratch), args.submissions)


if __name__ == "__main__":
    main()
