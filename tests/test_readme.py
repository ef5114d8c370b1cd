"""The README's command blocks, as a new user types them.

Every ```` ```bash ```` block of ``README.md`` is one of two kinds, and any other fails this test:

* the set-up block (install, build, test), which is what CI runs on a clean clone: each of its
  commands must appear in ``.ci/run``;
* the Glow block (chapter 6's training command): each command's options are the command's own
  (parsed by its parser), and the training itself is tested at a tiny size in ``test_glow_training.py``;
* the instructor's block, which runs here verbatim, copied out of the README, in a fresh copy of the
  repository (its tracked files, as ``git clone`` makes it) after two students' notebooks were put
  where the block's comment says: both are graded, get their feedback and their rows in
  ``grades.csv``, and the whole log holds no warning (an instructor reads one as "something is
  wrong with my grades").
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from course_notebooks import ROOT, cell_scores, nbgrader_role, source_notebook, submit, with_solutions_replaced
from course_grading.bugs.ex01_change_of_variables import BUGS

README = ROOT / "README.md"
A = "ex01_change_of_variables"
SOLUTION_MARKER = re.compile(r"^\s*### (BEGIN|END) SOLUTION\n", re.MULTILINE)


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)


def commands(block: str) -> list[str]:
    """The block's commands: each line without its comment, split at ``&&``."""
    lines = (line.split("#", 1)[0].strip() for line in block.splitlines())
    return [part.strip() for line in lines if line for part in line.split("&&")]


def is_setup(block: str) -> bool:
    return "pip install" in block


def is_instructor(block: str) -> bool:
    return "nbgrader autograde" in block


def is_glow(block: str) -> bool:
    return "course_pkg.glow" in block


def test_every_readme_block_is_one_this_test_knows() -> None:
    blocks = bash_blocks(README.read_text())
    assert [is_setup(b) for b in blocks].count(True) == 1, "one set-up block, with the install command"
    assert [is_instructor(b) for b in blocks].count(True) == 1, "one instructor block"
    assert [is_glow(b) for b in blocks].count(True) == 1, "one block of Glow training commands"
    unknown = [b for b in blocks if not (is_setup(b) or is_instructor(b) or is_glow(b))]
    assert not unknown, f"README blocks that no test runs: {unknown}"


def test_glow_block_uses_only_the_command_s_own_options() -> None:
    from course_pkg.glow import command_line

    block = next(b for b in bash_blocks(README.read_text()) if is_glow(b))
    for command in commands(block):
        words = command.split()
        assert words[0] in ("python", "torchrun"), command
        arguments = words[words.index("course_pkg.glow") + 1 :]
        if arguments == ["train", "--help"]:
            continue
        parsed = command_line().parse_args(arguments)
        assert parsed.command == "train" and parsed.dataset == "mnist", command


def test_setup_block_is_what_ci_runs() -> None:
    """CI (``.ci/run``) runs the set-up block's commands on a clean clone; the block cannot run here."""
    setup = next(b for b in bash_blocks(README.read_text()) if is_setup(b))
    ci = (ROOT / ".ci" / "run").read_text()
    ci_commands = [line.split("#", 1)[0].strip() for line in ci.splitlines()]
    for command in commands(setup):
        program, *arguments = command.split()
        assert any(re.search(rf"\b{re.escape(program)}\b", line) and all(a in line.split() for a in arguments)
                   for line in ci_commands if line), f"the README's `{command}` is not what .ci/run runs"


def fresh_clone(destination: Path) -> Path:
    """The repository's tracked files, as they are now, in ``destination`` (what a clone holds)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    return destination


def solution_code(grade_id: str) -> str:
    cell = next(c for c in source_notebook(A).cells if nbgrader_role(c).get("grade_id") == grade_id)
    return SOLUTION_MARKER.sub("", cell.source)


def released_notebook_with(solutions: dict[str, str]):
    """What a student hands in: the release with the solution cells filled in."""
    import nbformat

    release = nbformat.read(ROOT / "exercises" / A / f"{A}.ipynb", as_version=4)
    return with_solutions_replaced(release, solutions)


@pytest.mark.slow
def test_instructor_block_grades_two_students_with_no_error_and_no_warning(tmp_path) -> None:
    course = fresh_clone(tmp_path / "course")
    targets = [nbgrader_role(c)["grade_id"] for c in source_notebook(A).cells if nbgrader_role(c).get("solution")]
    reference = {target: solution_code(target) for target in targets}
    bug = BUGS["jacobian_transposed"]
    submit(course, "alice", A, released_notebook_with(reference))
    submit(course, "bob", A, released_notebook_with({**reference, bug.target: bug.source}))

    block = next(b for b in bash_blocks(README.read_text()) if is_instructor(b))
    run = subprocess.run(["bash", "-e", "-u", "-o", "pipefail", "-c", block], cwd=course,
                         capture_output=True, text=True)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-5000:]
    warnings = [line for line in log.splitlines() if re.search(r"warn|error|traceback", line, re.IGNORECASE)]
    assert not warnings, "the instructor's block printed:\n" + "\n".join(warnings)

    alice, bob = cell_scores(course, A, "alice"), cell_scores(course, A, "bob")
    total = sum(alice.values())
    assert total > 0 and all(score > 0 for score in alice.values()), alice
    assert sum(bob.values()) < total
    for student in ("alice", "bob"):
        assert list((course / "feedback" / student / A).glob("*.html")), f"no feedback for {student}"
    with open(course / "grades.csv") as grades:
        rows = {row["student_id"]: float(row["score"]) for row in csv.DictReader(grades)}
    assert rows == {"alice": pytest.approx(total), "bob": pytest.approx(sum(bob.values()))}
