"""Run a notebook's code cells as a Jupyter kernel would, in the current process, and record their outputs.

The check server (``check_server.py``) creates one :class:`CellShell` before any student code
exists and runs the student's cells through it in each forked child, so that magics
(``%matplotlib inline``, ``%time``), the value of a cell's last expression, ``display(...)`` and
inline matplotlib figures behave as they did in the student's notebook, for a fraction of the
cost of starting a kernel and importing torch for every submission. The outputs are nbformat
output dicts (``stream``, ``display_data``, ``execute_result``, ``error``), ready for the
graded notebook.
"""

from __future__ import annotations

import os

from IPython.core.displayhook import DisplayHook
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config

# What a kernel would use for figures: matplotlib's inline backend, which displays each open
# figure at the end of the cell (it looks for the running shell when matplotlib is imported).
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
TEXT_LIMIT = 20_000  # characters kept of one cell's stdout or stderr


class _RecordingDisplayHook(DisplayHook):
    """Keeps the value of a cell's last expression instead of printing ``Out[n]:``."""

    def write_output_prompt(self) -> None:
        pass

    def write_format_data(self, format_dict, md_dict=None) -> None:
        self.shell.recorded.append({"output_type": "execute_result", "execution_count": self.prompt_count,
                                    "data": format_dict, "metadata": md_dict or {}})

    def finish_displayhook(self) -> None:
        pass


class CellShell(InteractiveShell):
    """An IPython shell without history or terminal, whose :meth:`run` returns a cell's outputs."""

    recorded: list[dict]

    @classmethod
    def create(cls) -> CellShell:
        config = Config()
        config.HistoryManager.enabled = False  # no SQLite file, no thread (the shell is forked)
        shell = cls.instance(config=config, displayhook_class=_RecordingDisplayHook, colors="nocolor")
        shell.recorded = []
        os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
        return shell

    def run(self, source: str) -> list[dict]:
        """Run one cell in ``self.user_ns``; its outputs in the order a notebook shows them (streams first)."""
        self.recorded = []
        with capture_output() as captured:
            self.run_cell(source, store_history=True)
        outputs = [{"output_type": "stream", "name": name, "text": _cut(text)}
                   for name, text in (("stdout", captured.stdout), ("stderr", captured.stderr)) if text]
        outputs += [{"output_type": "display_data", "data": shown.data, "metadata": shown.metadata or {}}
                    for shown in captured.outputs]
        return outputs + self.recorded

    def enable_gui(self, gui=None) -> None:
        """``%matplotlib inline`` asks for no GUI event loop, and there is none to give."""

    def _showtraceback(self, etype, evalue, stb) -> None:
        self.recorded.append({"output_type": "error", "ename": etype.__name__, "evalue": _cut(str(evalue)),
                              "traceback": stb})


def _cut(text: str) -> str:
    if len(text) <= TEXT_LIMIT:
        return text
    return text[:TEXT_LIMIT] + f"\n... ({len(text) - TEXT_LIMIT} more characters not shown)\n"
