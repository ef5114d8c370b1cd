"""Build what students get, and audit it for anything secret.

    python tests/hidden/instructor/student_edition.py OUT [--feedback DIR ...]

writes into OUT (which must not exist yet):

* ``book/``      the HTML book, built from a copy of the repository that holds no solutions and
                 no hidden checks (so neither a page, a ``_sources`` file nor the search index can);
* ``exercises/`` the released notebooks, exactly as committed;
* ``wheels/``    ``course_pkg`` as a wheel.

Then the leak audit reads every file in OUT (inside the wheel too) looking for the secrets: the
markers of solution and hidden-test regions, and each distinctive line of every solution region
and of every hidden-check module (lines that ``course_pkg`` publishes anyway do not count). Each
``--feedback`` folder is audited for the markers and the hidden checks (a student's own correct
code may well match a line of the reference solution). It exits with status 1 and names file and secret
on any find. ``--audit-only OUT`` audits an existing folder.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from course_grading.course import (
    SECRET_MARKERS,
    assignments,
    course_root,
    expectation_lines,
    hidden_check_lines,
    secret_lines,
)

ROOT = course_root()

PUBLIC = ["book", "course_pkg", "_vendor", "_config.yml", "_toc.yml", "pyproject.toml", "README.md", "requirements.txt"]
TEXT_SUFFIXES = {".html", ".txt", ".js", ".md", ".ipynb", ".py", ".json", ".css", ".csv", ".cfg", ".toml", ""}


def build(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="student-edition-") as scratch:
        public = Path(scratch)
        for name in PUBLIC:
            source = ROOT / name
            copy = shutil.copytree if source.is_dir() else shutil.copy
            copy(source, public / name, **({"ignore": shutil.ignore_patterns("__pycache__", "*.egg-info")}
                                             if source.is_dir() else {}))
        cache = ROOT / "_build" / ".jupyter_cache"
        if cache.is_dir():  # executed chapters are reused when their text has not changed
            shutil.copytree(cache, public / "_build" / ".jupyter_cache")
        subprocess.run([str(Path(sys.executable).with_name("jupyter-book")), "build", str(public)], check=True,
                       stdout=subprocess.DEVNULL)
        shutil.copytree(public / "_build" / "html", out / "book")
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "-w", str(out / "wheels"), str(public)], check=True)
    shutil.copytree(ROOT / "exercises", out / "exercises")


def secrets(include_solutions: bool = True) -> list[str]:
    """What must never reach a student; a student's own feedback may hold lines like a solution's
    (their code can be right), so feedback is audited with ``include_solutions=False``."""
    found = list(SECRET_MARKERS) + expectation_lines()
    for assignment in assignments():
        found += hidden_check_lines(assignment) + (secret_lines(assignment) if include_solutions else [])
    return found


def texts(folder: Path):
    """(name, text) of every text file under ``folder``, and of every text file inside its wheels."""
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as wheel:
                for member in wheel.namelist():
                    if Path(member).suffix in TEXT_SUFFIXES:
                        yield f"{path}!{member}", wheel.read(member).decode(errors="replace")
        elif path.is_file() and path.suffix in TEXT_SUFFIXES:
            yield str(path), path.read_text(errors="replace")


def audit(folders: list[Path], feedback: list[Path] = ()) -> list[str]:
    """Every (file, secret) pair found, as readable lines."""
    return _find(folders, secrets()) + _find(feedback, secrets(include_solutions=False))


def _find(folders: list[Path], wanted: list[str]) -> list[str]:
    return [f"{name}: {secret!r}" for folder in folders for name, text in texts(folder)
            for secret in wanted if secret in text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--feedback", type=Path, nargs="*", default=[], help="feedback folders to audit too")
    parser.add_argument("--audit-only", action="store_true", help="audit OUT as it is, build nothing")
    args = parser.parse_args(argv)
    if not args.audit_only:
        if args.out.exists():
            parser.error(f"{args.out} exists already; give a new folder")
        build(args.out)
    leaks = audit([args.out], args.feedback)
    for leak in leaks:
        print(f"LEAK {leak}")
    print(f"leak audit: {len(leaks)} secrets found in {args.out}" + (" and feedback" if args.feedback else ""))
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
