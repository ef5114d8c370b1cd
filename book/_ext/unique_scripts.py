"""Sphinx extension for the book: every page lists each of its scripts once.

sphinx-thebe 0.3.1, which Jupyter Book 1 always loads, registers an inline script
(``const THEBE_JS_URL = ...``) after the HTML builder has started. Sphinx 7.4 then lists it twice
for every page, once with the file name ``None`` and once with ``''``, and the second copy made the
browser report "Identifier 'THEBE_JS_URL' has already been declared" on every page. This drops a
script that repeats an earlier one (same file or inline body, same priority and attributes).
"""

from __future__ import annotations

from typing import Any


def drop_repeated_scripts(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    seen: set[tuple] = set()
    unique = []
    for script in context.get("script_files", []):
        key = (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    if "script_files" in context:
        context["script_files"] = unique


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", drop_repeated_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
