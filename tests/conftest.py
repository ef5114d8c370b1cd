import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

# The instructor-only hidden checks import each other as top-level modules, as they do in the
# autograder cells.
sys.path.insert(0, str(Path(__file__).resolve().parent / "hidden"))
