import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
# Two cores shared with nbgrader kernels and check servers: one thread per test process is faster
# than two fighting ones, and it makes timings of small ops steady.
torch.set_num_threads(1)

BOOK_ROOT = Path(__file__).resolve().parents[1]
# The course whose hidden checks the grading package grades (its checks/ and bugs/ folders, its
# solutions): this repository, the one these tests belong to, whichever clone installed the package.
os.environ["COURSE_GRADING_ROOT"] = str(BOOK_ROOT)


@pytest.fixture(scope="session")
def site() -> Path:
    """The built HTML book (test_book.py, test_browser.py): `$COURSE_BOOK_SITE` when set (a site
    built elsewhere), else `_build/html`, which is built with `jupyter-book build .` when missing."""
    if os.environ.get("COURSE_BOOK_SITE"):
        path = Path(os.environ["COURSE_BOOK_SITE"]).resolve()
        assert (path / "index.html").exists(), f"COURSE_BOOK_SITE={path} holds no built book"
        return path
    path = BOOK_ROOT / "_build" / "html"
    if not (path / "index.html").exists():
        build = subprocess.run([str(Path(sys.executable).with_name("jupyter-book")), "build", str(BOOK_ROOT)],
                               capture_output=True, text=True)
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return path
