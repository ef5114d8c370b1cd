import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

# The instructor-only hidden checks import each other as top-level modules, as they do in the
# autograder cells.
sys.path.insert(0, str(Path(__file__).resolve().parent / "hidden"))


# The built book, shared by the tests that read it (test_book.py, test_browser.py).
import os  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402

BOOK_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def site() -> Path:
    """The built HTML book: `$COURSE_BOOK_SITE` when set (a site built elsewhere, e.g. in a copy of
    the repository), else `_build/html`, which is built with `jupyter-book build .` when missing."""
    if os.environ.get("COURSE_BOOK_SITE"):
        path = Path(os.environ["COURSE_BOOK_SITE"]).resolve()
        assert (path / "index.html").exists(), f"COURSE_BOOK_SITE={path} holds no built book"
        return path
    path = BOOK_ROOT / "_build" / "html"
    if not (path / "index.html").exists():
        build = subprocess.run([sys.executable, "-m", "jupyter_book", "build", str(BOOK_ROOT)],
                               capture_output=True, text=True)
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return path
