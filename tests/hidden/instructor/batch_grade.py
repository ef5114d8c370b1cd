"""Grade a whole class: one ``nbgrader autograde`` process per student, several at a time.

    python tests/hidden/instructor/batch_grade.py ex01_change_of_variables --workers 2

Run it from the course root. Each student is graded in a process of its own, so one that hangs,
crashes or breaks its notebook's metadata costs that student only; these processes are forked from
a server that has nbgrader imported (``multiprocessing``'s forkserver). With one worker the course's
SQLite gradebook is used; with more, the command starts a PostgreSQL server of its own on
loopback (from Debian's ``postgresql`` package), because SQLite takes one writer at a time. Its
data lives in ``gradebook-postgres/`` beside the course and is reused by later runs.

All students share one check server (``check_server.py --socket``), which imports torch and the
checks once and forks a process for each student's cells and for each check.

A progress line is printed per student. ``grading/<assignment>.json`` records each student's
status (ok, or the worst of delegated, timeout, crashed, tampered, grader failed that a check ended
with; metadata error or crashed when nbgrader itself failed on the notebook), score, and how every
check ended (``checks``: per check cell, per check, as the graded notebook records it); a later run on the same
gradebook skips students already graded whose submission has not changed since (``--force``
grades everyone again).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from threading import Lock

from course_grading.engine.grader import STATUS_KEY, Status, worst

SQLITE = "sqlite"
POSTGRES = "postgres"
# A submission whose worst check ended so is flagged with that status; with any other it is "ok"
# (graded normally, whatever it scored).
FLAGGED = {Status.DELEGATED, Status.TAMPERED, Status.TIMEOUT, Status.CRASHED, Status.GRADER_FAILED}


def students_of(course: Path, assignment: str) -> list[str]:
    submitted = course / "submitted"
    return sorted(p.name for p in submitted.iterdir() if (p / assignment).is_dir()) if submitted.is_dir() else []


def submission_time(course: Path, student: str, assignment: str) -> float:
    return max((p.stat().st_mtime for p in (course / "submitted" / student / assignment).rglob("*")), default=0.0)


class PostgresGradebook:
    """A PostgreSQL server on 127.0.0.1 for the gradebook, started and stopped by this command."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = _free_port()
        self.bin = _postgres_bin()
        # PostgreSQL refuses to run as root: then the server runs as Debian's "postgres" user.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def run(self, *command: str) -> None:
        subprocess.run([*self.as_user, *command], check=True, capture_output=True, text=True)

    def __enter__(self) -> str:
        if not (self.data / "PG_VERSION").exists():
            self.data.mkdir(parents=True, exist_ok=True)
            if self.as_user:
                shutil.chown(self.data, "postgres", "postgres")
            self.run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "grader")
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c max_connections=50"
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.data / "server.log"),
                 "-w", "start")
        with contextlib.suppress(subprocess.CalledProcessError):  # already there on a later run
            self.run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "grader", "gradebook")
        return f"postgresql+psycopg://grader@127.0.0.1:{self.port}/gradebook"

    def __exit__(self, *exc) -> None:
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


def _postgres_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not candidates:
        sys.exit("PostgreSQL is not installed: `apt-get install postgresql`, or grade with --workers 1")
    return candidates[-1].parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def nbgrader(course: Path, db_url: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``nbgrader *args`` on the course in a process of its own (for everything but autograde)."""
    command = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.db_url={db_url}"]
    return subprocess.run(command, cwd=course, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# nbgrader takes seconds to import: each student's process is forked from a server that has it loaded.
STUDENT_PROCESSES = multiprocessing.get_context("forkserver")
STUDENT_PROCESSES.set_forkserver_preload(["nbgrader.apps.nbgraderapp", "nbgrader.converters.autograde",
                                          "nbgrader.preprocessors"])


def autograde(course: Path, db_url: str, environment: dict, assignment: str, student: str, log: Path) -> None:
    """Runs in the student's own process: ``nbgrader autograde`` for one student; exits with its status."""
    os.setsid()  # a process group of its own, so a timeout can stop everything it started
    with open(log, "w") as output:
        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
    os.chdir(course)
    os.environ.update(environment)
    from nbgrader.apps.nbgraderapp import NbGraderApp
    from jupyter_core.application import NoStart

    status = 0
    try:
        app = NbGraderApp()
        app.initialize(["autograde", assignment, "--student", student, "--force", f"--CourseDirectory.db_url={db_url}"])
        app.start()
    except NoStart:  # how nbgrader's app says that its sub-command finished
        pass
    except SystemExit as exit:
        status = exit.code if isinstance(exit.code, int) else 1
    sys.stdout.flush()
    os._exit(status)


def grade_student(course: Path, db_url: str, assignment: str, student: str, timeout: float) -> dict:
    started = time.perf_counter()
    environment = {name: os.environ[name] for name in ("COURSE_CHECK_SERVER", "COURSE_CHECK_TIME_LIMIT")
                   if name in os.environ}
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "autograde.log"
        process = STUDENT_PROCESSES.Process(target=autograde, args=(course, db_url, environment, assignment,
                                                                    student, log))
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.join()
            return {"status": "timeout", "score": 0.0, "seconds": timeout,
                    "message": f"grading took longer than {timeout:g} s and was stopped"}
        output = log.read_text() if log.exists() else ""
    seconds = round(time.perf_counter() - started, 2)
    if process.exitcode != 0:
        metadata = "metadata" in output or "checksum" in output.lower()
        return {"status": "metadata error" if metadata else "crashed", "score": 0.0, "seconds": seconds,
                "message": first_error(output)}
    score, max_score = read_score(db_url, assignment, student)
    checks = check_statuses(course, assignment, student)
    flagged = worst(status for cell in checks.values() for status in cell.values())
    return {"status": flagged.value if flagged in FLAGGED else "ok", "score": score, "max_score": max_score,
            "seconds": seconds, "checks": checks}


def first_error(log: str) -> str:
    """nbgrader's first error message, its continuation lines joined, without the log prefix."""
    lines = log.splitlines()
    for index, line in enumerate(lines):
        if "| ERROR]" in line:
            message = [line.split("]", 1)[1].strip()]
            for more in lines[index + 1:]:
                if not more.startswith(" ") or not more.strip():
                    break
                message.append(more.strip())
            return " ".join(message)
    return log.strip()[-300:]


def read_score(db_url: str, assignment: str, student: str) -> tuple[float, float]:
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gradebook:
        submission = gradebook.find_submission(assignment, student)
        return submission.score, submission.max_score


def has_assignment(db_url: str, assignment: str) -> bool:
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(db_url) as gradebook:
        try:
            gradebook.find_assignment(assignment)
        except MissingEntry:
            return False
        return True


def check_statuses(course: Path, assignment: str, student: str) -> dict[str, dict[str, str]]:
    """How each check ended, per check cell, as the graded notebooks record it."""
    statuses = {}
    for path in sorted((course / "autograded" / student / assignment).glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if STATUS_KEY in cell.get("metadata", {}):
                statuses[cell["metadata"]["nbgrader"]["grade_id"]] = cell["metadata"][STATUS_KEY]
    return statuses


def grade_class(course: Path, assignment: str, workers: int, force: bool, timeout: float, database: str) -> dict:
    summary_path = course / "grading" / f"{assignment}.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() and not force else {}
    students = students_of(course, assignment)
    todo = [s for s in students
            if force or summary.get(s, {}).get("database") != database
            or summary[s]["graded_at"] < submission_time(course, s, assignment)]
    print(f"{assignment}: {len(students)} submissions, {len(students) - len(todo)} already graded, "
          f"{len(todo)} to grade with {workers} worker{'s' if workers > 1 else ''} ({database})", flush=True)
    lock, done = Lock(), 0
    with _gradebook(course, database) as db_url, _shared_check_server():
        if not has_assignment(db_url, assignment):  # the gradebook must hold the assignment's hidden checks
            with tempfile.TemporaryDirectory() as release:
                nbgrader(course, db_url, "generate_assignment", assignment,
                         f"--CourseDirectory.release_directory={release}")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(grade_student, course, db_url, assignment, s, timeout): s for s in todo}
            for future in as_completed(futures):
                student, result = futures[future], future.result()
                result.update(graded_at=time.time(), database=database)
                with lock:
                    done += 1
                    summary[student] = result
                    summary_path.parent.mkdir(exist_ok=True)
                    summary_path.write_text(json.dumps(summary, indent=1, sort_keys=True))
                    score = f"{result['score']:g}/{result.get('max_score', 0):g}" if "max_score" in result else "-"
                    print(f"[{done}/{len(todo)}] {student}: {result['status']}, {score} points, "
                          f"{result['seconds']:.1f} s", flush=True)
    return summary


@contextlib.contextmanager
def _shared_check_server():
    """One check server for the whole class; each student's nbgrader process connects to it."""
    with tempfile.TemporaryDirectory() as folder:
        address = os.path.join(folder, "checks.sock")
        server = subprocess.Popen([sys.executable, "-m", "course_grading.engine.check_server", "--socket", address],
                                  stdout=subprocess.PIPE, text=True)
        try:
            json.loads(server.stdout.readline())  # {"ready": true}
            os.environ["COURSE_CHECK_SERVER"] = address
            yield
        finally:
            os.environ.pop("COURSE_CHECK_SERVER", None)
            server.kill()
            server.wait()


@contextlib.contextmanager
def _gradebook(course: Path, database: str):
    if database == SQLITE:
        yield "sqlite:///" + str(course / "gradebook.db")
    else:
        with PostgresGradebook(course / "gradebook-postgres") as url:
            yield url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignment")
    parser.add_argument("--workers", type=int, default=1, help="students graded at once (default 1)")
    parser.add_argument("--database", choices=[SQLITE, POSTGRES],
                        help="gradebook: sqlite (one worker) or postgres (default with several workers)")
    parser.add_argument("--force", action="store_true", help="grade every student again")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one student's grading may take")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    database = args.database or (SQLITE if args.workers == 1 else POSTGRES)
    if database == SQLITE and args.workers > 1:
        parser.error("SQLite takes one writer at a time: use --database postgres with several workers")
    course = Path.cwd()
    if not (course / "nbgrader_config.py").exists() or not (course / "solutions" / args.assignment).is_dir():
        parser.error(f"run this from the course root, which has nbgrader_config.py and solutions/{args.assignment}/")
    os.environ["COURSE_GRADING_ROOT"] = str(course)  # the check server grades this course's checks
    summary = grade_class(course, args.assignment, args.workers, args.force, args.timeout, database)
    counts: dict[str, int] = {}
    for result in summary.values():
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    print("summary: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) +
          f" (grading/{args.assignment}.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
