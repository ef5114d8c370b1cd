"""The instructor's guide (``book/appendix_instructors.md``), executed: every command in it runs, in
order, in a scratch copy of the course, and does what the guide says it does.

How the test reads the guide (the convention for whoever edits it):

* a ```` ```bash ```` block runs with ``bash -e -u -o pipefail`` in the course root, and a
  ```` ```python ```` block with this interpreter (``python -c``) there; a non-zero exit status
  fails the test, with the block's line number and output;
* a ```` ```{code-block} ```` with ``:caption: PATH (new file)`` is written to ``PATH`` at that
  point; one with ``:caption: PATH (excerpt)`` must appear verbatim in ``PATH`` of this repository;
* a ```` ```text ```` block is never run: it shows output (each one is compared with the real
  output, see ``SAMPLES``) or a one-off installation (``NOT_OUTPUT``);
* any other kind of block fails the test, so that no command can escape it; and no executed block
  may hold a placeholder such as ``<student>``.

Before the first command the scratch course holds what an instructor's clone holds (the
configuration, solutions, hidden checks, tests, the book's sources and the committed release, made
with ``copy_course`` and the public files) and what the guide says the instructor downloaded: one
zip file in ``downloaded/ex01_change_of_variables/archive/`` with alice's submission (correct
solutions of her own) and bob's (a bug in each function), named ``<student_id>--<notebook>.ipynb``
as ``nbgrader_config.py`` documents, plus two files that must be skipped. After each block, the
check registered in ``AFTER`` for a string the block contains runs: the files it produced, the
scores in the gradebook, the CSV, the batch summary's statuses. Every check must run once.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import nbformat
import pytest
import yaml

from course_notebooks import (
    ROOT,
    SECRET_MARKERS,
    copy_course,
    hidden_check_lines,
    nbgrader_role,
    source_notebook,
    with_solutions_replaced,
)

GUIDE = ROOT / "book" / "appendix_instructors.md"
PAGE = "book/appendix_instructors"
A = "ex01_change_of_variables"
EXAMPLE = "ex99_worked_example"
PUBLIC = ["book", "course_pkg", "_vendor", "exercises", "_config.yml", "_toc.yml", "pyproject.toml", "README.md",
          "requirements.txt"]
PLACEHOLDER = re.compile(r"<[A-Za-z_][A-Za-z_ -]*>")

# alice: correct solutions written her own way (a submission equal to the reference solution would
# rightly trip the leak audit of the feedback that goes back to her).
ALICE = {
    "numerical_jacobian": '''
def numerical_jacobian(f, x, eps=1e-6):
    size = x.shape[0]
    jacobian = torch.empty(size, size, dtype=x.dtype)
    for k in range(size):
        nudge = torch.zeros_like(x)
        nudge[k] = eps
        jacobian[:, k] = (f(x + nudge) - f(x - nudge)) / (2 * eps)
    return jacobian
''',
    "log_abs_det_jacobian": '''
def log_abs_det_jacobian(f, x):
    return torch.linalg.slogdet(torch.func.jacrev(f)(x))[1]
''',
    "flow_log_prob": '''
def flow_log_prob(forward, base_log_prob, x):
    one = lambda row: forward(row[None])[0]
    volume = [torch.linalg.slogdet(torch.func.jacrev(one)(row))[1] for row in x]
    return base_log_prob(forward(x)) + torch.stack(volume)
''',
}


# ------------------------------------------------------------------------------ reading the guide


@dataclass
class Block:
    line: int
    kind: str  # bash, python, text, file (a new file), excerpt
    body: str
    path: str = ""


def guide_blocks(text: str) -> list[Block]:
    """Every fenced block of the guide, in order (indented ones inside lists too)."""
    blocks, lines, i = [], text.splitlines(keepends=True), 0
    while i < len(lines):
        opening = re.match(r"^( *)(`{3,})(.*?)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, info = opening.groups()
        start, body = i + 1, []
        i += 1
        while not re.match(rf"^{indent}{fence}\s*$", lines[i]):
            body.append(lines[i][len(indent):])
            i += 1
        i += 1
        blocks.append(parse_block(start, info, body))
    return blocks


def parse_block(line: int, info: str, body: list[str]) -> Block:
    if info.startswith("{code-block}"):
        options = {}
        while body and (option := re.match(r"^:(\w+):\s*(.*?)\s*$", body[0])):
            options[option[1]] = option[2]
            body = body[1:]
        body = body[1:] if body and not body[0].strip() else body
        caption = re.fullmatch(r"(\S+) \((new file|excerpt)\)", options.get("caption", ""))
        assert caption, f"line {line}: a code-block needs `:caption: PATH (new file)` or `PATH (excerpt)`"
        return Block(line, "file" if caption[2] == "new file" else "excerpt", "".join(body), caption[1])
    assert info in ("bash", "python", "text"), (
        f"line {line}: a ```{info} block; the guide uses bash and python (run by this test), text (not run) "
        "and captioned code-blocks")
    return Block(line, info, "".join(body))


def blocks() -> list[Block]:
    return guide_blocks(GUIDE.read_text())


# ------------------------------------------------------------------- fast checks of the guide itself


def test_guide_uses_only_blocks_this_test_understands():
    found = blocks()
    assert {b.kind for b in found} >= {"bash", "python", "text", "file", "excerpt"}
    for block in found:
        if block.kind in ("bash", "python"):
            assert not PLACEHOLDER.search(block.body), (
                f"line {block.line}: a placeholder {PLACEHOLDER.search(block.body)[0]} in a block that runs")
        if block.kind == "excerpt":
            assert block.body.strip() in (ROOT / block.path).read_text(), (
                f"line {block.line}: the excerpt is not in {block.path} any more")


def sample_keys(block: Block) -> list[str]:
    """The keys of SAMPLES and NOT_OUTPUT that a text block starts with."""
    return [key for key in [*SAMPLES, *NOT_OUTPUT] if block.body.lstrip().startswith(key)]


def test_every_text_block_is_a_compared_sample_or_an_installation():
    texts = [b for b in blocks() if b.kind == "text"]
    for block in texts:
        assert len(sample_keys(block)) == 1, (
            f"line {block.line}: a text block should start with one key of SAMPLES or NOT_OUTPUT")
    assert sorted(key for b in texts for key in sample_keys(b)) == sorted([*SAMPLES, *NOT_OUTPUT])


def test_guide_is_public_and_holds_no_secret():
    """The guide is a page of the book: no solution line, hidden-check line or nbgrader marker."""
    from course_grading.instructor import student_edition

    text = GUIDE.read_text()
    leaked = [secret for secret in student_edition.secrets() if secret in text]
    assert leaked == [], f"the guide contains secret text: {leaked[:3]}"
    assert not any(marker in text for marker in SECRET_MARKERS)


# ------------------------------------------------------------------------- running the guide


def scratch_course(course: Path) -> Path:
    """An instructor's clone of the course in ``course``, with the downloads the guide starts from."""
    course.mkdir()
    os.chmod(course, 0o755)  # the batch command's PostgreSQL runs as user postgres when the tests run as root
    copy_course(course, [])
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".ipynb_checkpoints")
    for name in PUBLIC:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, course / name, ignore=ignore)
        else:
            shutil.copy(source, course / name)
    for test_file in (ROOT / "tests").glob("*.py"):
        shutil.copy(test_file, course / "tests")
    cache = ROOT / "_build" / ".jupyter_cache"
    if cache.is_dir():  # the book's chapters, executed already: the student edition reuses them
        shutil.copytree(cache, course / "_build" / ".jupyter_cache")
    toc = yaml.safe_load((course / "_toc.yml").read_text())
    if PAGE not in (course / "_toc.yml").read_text():  # the guide is published: audit it with the book
        entries = toc["chapters"] if "chapters" in toc else toc["parts"][-1]["chapters"]
        entries.append({"file": PAGE})
        (course / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))

    notebook = source_notebook(A)
    bugs = importlib.import_module(f"course_grading.bugs.{A}")
    buggy = with_solutions_replaced(notebook, {bugs.BUGS[n].target: bugs.BUGS[n].source
                                               for n in bugs.ONE_BUG_PER_FUNCTION})
    archive = course / "downloaded" / A / "archive"
    archive.mkdir(parents=True)
    with zipfile.ZipFile(archive / f"{A}-submissions.zip", "w") as download:
        download.writestr(f"{A}/alice--{A}.ipynb", nbformat.writes(with_solutions_replaced(notebook, ALICE)))
        download.writestr(f"{A}/bob--{A}.ipynb", nbformat.writes(buggy))
        download.writestr(f"{A}/index.html", "<p>Submissions downloaded from the LMS</p>")  # not a notebook
        download.writestr(f"__MACOSX/{A}/._alice--{A}.ipynb", b"\x00\x05\x16\x07")  # macOS's copy
    return course


@dataclass
class Ran:
    block: Block
    stdout: str
    seconds: float


def run_block(block: Block, course: Path, env: dict) -> Ran:
    started = time.perf_counter()
    if block.kind == "file":
        path = course / block.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.body)
        return Ran(block, "", 0.0)
    command = (["bash", "-e", "-u", "-o", "pipefail", "-c", block.body] if block.kind == "bash"
               else [sys.executable, "-c", block.body])
    result = subprocess.run(command, cwd=course, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (
        f"the {block.kind} block at line {block.line} of the guide exited with status {result.returncode}:\n"
        f"{block.body}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-6000:]}")
    return Ran(block, result.stdout, time.perf_counter() - started)


def stop_postgres(course: Path) -> None:
    data = course / "gradebook-postgres"
    pg_ctl = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if (data / "postmaster.pid").exists() and pg_ctl:
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_user, str(pg_ctl[-1]), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)


@pytest.mark.slow
def test_every_command_of_the_guide_runs_and_does_what_it_says():
    scratch = Path(tempfile.mkdtemp(prefix="instructor-guide-"))
    os.chmod(scratch, 0o755)
    course = scratch / "course"  # the student edition goes beside it, to ../student-edition
    # The guide's commands grade the scratch course, as an instructor's grade the clone that
    # installed the grading package.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "COURSE_GRADING_ROOT": str(course)}
    for variable in ("COURSE_CHECK_SERVER", "COURSE_CHECK_TIME_LIMIT"):
        env.pop(variable, None)
    timings: list[tuple[int, str, float]] = []
    try:
        scratch_course(course)
        found = blocks()
        runs: list[Ran] = []
        checked: set[str] = set()
        for block in found:
            if block.kind in ("text", "excerpt"):
                continue
            ran = run_block(block, course, env)
            runs.append(ran)
            timings.append((block.line, block.kind, ran.seconds))
            keys = [key for key in AFTER if key in block.body]
            assert len(keys) <= 1, f"line {block.line}: the block matches several checks: {keys}"
            for key in keys:
                AFTER[key](course, ran)
                checked.add(key)
        assert checked == set(AFTER), f"no block of the guide runs {sorted(set(AFTER) - checked)}"
        outputs = Outputs(course, runs)
        for block in (b for b in found if b.kind == "text"):
            for key in sample_keys(block):
                if key in SAMPLES:
                    SAMPLES[key](block.body, outputs)
    finally:
        stop_postgres(course)
        shutil.rmtree(scratch, ignore_errors=True)
        total = sum(seconds for _, _, seconds in timings)
        print(f"\n{len(timings)} blocks of the guide ran in {total:.0f} s:")
        for line, kind, seconds in timings:
            print(f"  line {line:4d} {kind:6s} {seconds:6.1f} s")


# --------------------------------------------------------------- what each command must produce


def gradebook(course: Path):
    from nbgrader.api import Gradebook

    return Gradebook(f"sqlite:///{course / 'gradebook.db'}")


def scores(course: Path, assignment: str) -> dict[str, tuple[float, float]]:
    with gradebook(course) as book:
        return {s.student_id: (s.score, s.max_score) for s in book.find_assignment(assignment).submissions}


def page_text(path: Path) -> str:
    return unescape(re.sub(r"<[^>]+>", "", path.read_text()))


def after_setup_check(course: Path, ran: Ran) -> None:
    assert ran.stdout.startswith("nbgrader 0.9"), ran.stdout


def after_roster(course: Path, ran: Ran) -> None:
    with gradebook(course) as book:
        students = {s.id: (s.first_name, s.last_name, s.email) for s in book.students}
    assert students == {"alice": ("Alice", "Archer", "alice@example.org"), "bob": ("Bob", "Baker", "bob@example.org"),
                        "carol": ("Carol", "Cooper", "carol@example.org")}


def after_generate(course: Path, ran: Ran) -> None:
    released = course / "exercises" / A / f"{A}.ipynb"
    assert released.read_bytes() == (ROOT / "exercises" / A / f"{A}.ipynb").read_bytes()
    with gradebook(course) as book:
        assert [n.name for n in book.find_assignment(A).notebooks] == [A]


def after_student_edition(course: Path, ran: Ran) -> None:
    edition = course.parent / "student-edition"
    assert "leak audit: 0 secrets found in ../student-edition" in ran.stdout.splitlines(), ran.stdout
    assert (edition / "book" / "index.html").exists()
    assert (edition / "book" / f"{PAGE}.html").exists()  # this guide is published, and audited
    assert (edition / "exercises" / A / f"{A}.ipynb").exists()
    assert len(list((edition / "wheels").glob("course_pkg-*.whl"))) == 1
    assert not (edition / "solutions").exists() and not (edition / "tests").exists()


def after_zip_collect(course: Path, ran: Ran) -> None:
    submitted = sorted(p.name for p in (course / "submitted").iterdir())
    assert submitted == ["alice", "bob"], submitted  # not the macOS copy, not the readme
    for student in submitted:
        assert (course / "submitted" / student / A / f"{A}.ipynb").exists()
    alice = nbformat.read(course / "submitted" / "alice" / A / f"{A}.ipynb", 4)
    assert ALICE["log_abs_det_jacobian"].strip() in [c.source for c in alice.cells]


def after_autograde(course: Path, ran: Ran) -> None:
    from course_notebooks import cell_scores
    from test_grading_pipeline import expected_scores_with_bugs

    for student in ("alice", "bob"):
        assert (course / "autograded" / student / A / f"{A}.ipynb").exists()
    assert scores(course, A) == {"alice": (15, 15), "bob": (7, 15)}
    bugs = importlib.import_module(f"course_grading.bugs.{A}")
    assert cell_scores(course, A, "bob") == expected_scores_with_bugs(A, bugs.ONE_BUG_PER_FUNCTION)


def after_regrade_one(course: Path, ran: Ran) -> None:
    def graded(student: str) -> Path:
        return course / "autograded" / student / A / f"{A}.ipynb"

    assert graded("bob").stat().st_mtime > graded("alice").stat().st_mtime  # bob graded again, alice not
    assert scores(course, A) == {"alice": (15, 15), "bob": (7, 15)}


def after_inspect(course: Path, ran: Ran) -> None:
    assert ran.stdout.startswith("alice: 15 of 15 points\nbob: 7 of 15 points\n"), ran.stdout
    assert "[FAILED]" in ran.stdout and "AssertionError" in ran.stdout


def after_feedback(course: Path, ran: Ran) -> None:
    for student in ("alice", "bob"):
        assert (course / "feedback" / student / A / f"{A}.html").exists()
    text = page_text(course / "feedback" / "bob" / A / f"{A}.html")
    assert "[FAILED]" in text and "expected" in text
    leaked = [line for line in hidden_check_lines(A) if line in text]
    assert leaked == [], f"hidden-check code reached the feedback: {leaked[:3]}"


def after_return(course: Path, ran: Ran) -> None:
    folder = course / "return" / A
    assert sorted(p.name for p in folder.iterdir()) == [f"alice--{A}.html", f"bob--{A}.html"]
    assert (folder / f"bob--{A}.html").read_bytes() == (course / "feedback" / "bob" / A / f"{A}.html").read_bytes()
    assert ran.stdout.strip().endswith(f"leak audit: 0 secrets found in return/{A}"), ran.stdout


def grades_csv(path: Path) -> dict[str, dict]:
    return {row["student_id"]: row for row in csv.DictReader(io.StringIO(path.read_text()))}


def after_export(course: Path, ran: Ran) -> None:
    rows = grades_csv(course / "grades.csv")
    assert {s: (r["last_name"], float(r["score"]), float(r["max_score"])) for s, r in rows.items()} == {
        "alice": ("Archer", 15, 15), "bob": ("Baker", 7, 15), "carol": ("Cooper", 0, 15)}
    assert ran.stdout == (course / "grades.csv").read_text()


def after_batch(course: Path, ran: Ran) -> None:
    assert f"{A}: 2 submissions, 0 already graded, 2 to grade with 2 workers (postgres)" in ran.stdout
    summary = json.loads((course / "grading" / f"{A}.json").read_text())
    assert {s: (r["status"], r["score"], r["max_score"]) for s, r in summary.items()} == {
        "alice": ("ok", 15, 15), "bob": ("ok", 7, 15)}
    assert (course / "gradebook-postgres" / "PG_VERSION").exists()


def after_postgres_export(course: Path, ran: Ran) -> None:
    assert (course / "grades-batch.csv").read_text() == (course / "grades.csv").read_text()
    assert not (course / "gradebook-postgres" / "postmaster.pid").exists(), "the PostgreSQL server still runs"
    assert (course / "feedback" / "bob" / A / f"{A}.html").exists()


def after_example_notebook(course: Path, ran: Ran) -> None:
    notebook = source_notebook(EXAMPLE, course)
    roles = [nbgrader_role(c) for c in notebook.cells if nbgrader_role(c)]
    assert [(r["grade_id"], r.get("points")) for r in roles] == [
        ("compose_flows", None), ("test_compose_flows", 1), ("hidden_compose_flows", 4)]


def after_example_checks_tested(course: Path, ran: Ran) -> None:
    passed = re.search(r"(\d+) passed", ran.stdout)
    assert passed and int(passed[1]) >= 7 and "failed" not in ran.stdout, ran.stdout


def after_example_generate(course: Path, ran: Ran) -> None:
    release = nbformat.read(course / "exercises" / EXAMPLE / f"{EXAMPLE}.ipynb", 4)
    sources = {nbgrader_role(c).get("grade_id"): c.source for c in release.cells}
    assert sources["compose_flows"].endswith("    # YOUR CODE HERE\n    raise NotImplementedError()")
    assert "log_det + layer_log_det" not in sources["compose_flows"]
    assert "grader" not in sources["hidden_compose_flows"]
    assert sources["hidden_compose_flows"].startswith("# Hidden checks of `compose_flows` (4 points)")


def after_example_submissions(course: Path, ran: Ran) -> None:
    for student in ("reference", "buggy"):
        assert (course / "submitted" / student / EXAMPLE / f"{EXAMPLE}.ipynb").exists()


def after_example_autograde(course: Path, ran: Ran) -> None:
    assert scores(course, EXAMPLE) == {"reference": (5, 5), "buggy": (2, 5)}


def after_example_cleanup(course: Path, ran: Ran) -> None:
    with gradebook(course) as book:
        assert [a.name for a in book.assignments] == [A]
        assert sorted(s.id for s in book.students) == ["alice", "bob", "carol"]
    assert sorted(p.name for p in (course / "solutions").iterdir()) == sorted(p.name for p in (ROOT / "solutions").iterdir())
    assert sorted(p.name for p in (course / "exercises").iterdir()) == sorted(p.name for p in (ROOT / "exercises").iterdir())
    assert not list((course / "tests" / "hidden").rglob(f"{EXAMPLE}*"))
    assert sorted(p.name for p in (course / "submitted").iterdir()) == ["alice", "bob"]


# A string of the block -> the check that runs after it.
AFTER: dict[str, Callable[[Path, Ran], None]] = {
    "import course_pkg, nbgrader, torch": after_setup_check,
    "nbgrader db student import students.csv\n": after_roster,
    f"nbgrader generate_assignment {A} --force": after_generate,
    "python tests/hidden/instructor/student_edition.py ../student-edition": after_student_edition,
    f"nbgrader zip_collect {A}": after_zip_collect,
    f"nbgrader autograde {A}\n": after_autograde,
    f"nbgrader autograde {A} --student bob --force": after_regrade_one,
    "the report of every check cell that lost points": after_inspect,
    f"nbgrader generate_feedback {A}\n": after_feedback,
    f"mkdir -p return/{A}": after_return,
    "nbgrader export\ncat grades.csv": after_export,
    f"batch_grade.py {A} --workers 2": after_batch,
    "-m fast -w stop": after_postgres_export,
    "nbformat.write(notebook, path)": after_example_notebook,
    f"tests/test_hidden_checks.py -q -k {EXAMPLE}": after_example_checks_tested,
    f"nbgrader generate_assignment {EXAMPLE}\n": after_example_generate,
    "Two practice submissions": after_example_submissions,
    f"nbgrader autograde {EXAMPLE}\n": after_example_autograde,
    f"nbgrader db assignment remove {EXAMPLE}": after_example_cleanup,
}


# ------------------------------------------------------------ the guide's samples against reality


class Outputs:
    """What the commands printed and wrote, for the samples to be compared with."""

    def __init__(self, course: Path, runs: list[Ran]) -> None:
        self.course, self.runs = course, runs

    def of(self, key: str) -> str:
        (ran,) = [r for r in self.runs if key in r.block.body]
        return ran.stdout


def lines_in(sample: str, text: str) -> None:
    missing = [line.strip() for line in sample.splitlines() if line.strip() and line.strip() not in text]
    assert missing == [], f"the guide's sample shows lines that the real output does not have: {missing[:3]}"


def sample_inspect(sample: str, out: Outputs) -> None:
    real = out.of("the report of every check cell that lost points")
    assert real.startswith(sample.rstrip("\n")), (
        f"the guide's sample:\n{sample}\nthe real output starts:\n{real[:len(sample) + 200]}")


def sample_report(sample: str, out: Outputs) -> None:
    lines_in(sample, page_text(out.course / "feedback" / "bob" / A / f"{A}.html"))


def sample_grades(sample: str, out: Outputs) -> None:
    assert sample == (out.course / "grades.csv").read_text()


def sample_batch(sample: str, out: Outputs) -> None:
    real = out.of(f"batch_grade.py {A} --workers 2")

    def shape(text: str) -> list[str]:  # the order of finishing and the seconds vary from run to run
        lines = [re.sub(r"\[\d+/(\d+)\]", r"[n/\1]", line) for line in text.splitlines()]
        return sorted(re.sub(r"\d+\.\d s$", "... s", line) for line in lines if line and not line[0] in " {}\"")

    assert shape(sample) == shape(real.split("\n{")[0])


def sample_release_comment(sample: str, out: Outputs) -> None:
    release = nbformat.read(out.course / "exercises" / A / f"{A}.ipynb", 4)
    hidden = next(c for c in release.cells if nbgrader_role(c).get("grade_id") == "hidden_numerical_jacobian")
    assert sample.strip() == hidden.source.strip()


def sample_example_scores(sample: str, out: Outputs) -> None:
    assert sample.strip() == out.of("What the practice submissions scored").strip()


# A string of a text block -> how it is compared with what the commands really printed or wrote.
SAMPLES: dict[str, Callable[[str, Outputs], None]] = {
    "alice: 15 of 15 points": sample_inspect,
    "Hidden checks of numerical_jacobian: 2 of 4 points": sample_report,
    "assignment,duedate,timestamp": sample_grades,
    f"{A}: 2 submissions": sample_batch,
    "# Hidden checks of `numerical_jacobian`": sample_release_comment,
    "reference: 5 of 5 points": sample_example_scores,
}
# Text blocks that are not output: installation, done once per machine.
NOT_OUTPUT = ["python3.11 -m venv"]
