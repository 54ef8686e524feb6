"""Writing the end-of-run files one by one: a failed write is one error line, not the rest lost."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

from .entries import RunResults

INTERRUPTED_NOTE = ("the run was interrupted (Ctrl-C): the reports cover the tests that ran "
                    "before it")
BASELINE_KEPT_NOTE = "the baseline file was not updated because the run was interrupted"


def probe_writable(path: str) -> str | None:
    """Why `path` cannot be written, or None. Tries for real: access() says yes to root even on
    /proc or a read-only mount."""
    absolute = os.path.abspath(path)
    directory = os.path.dirname(absolute) or "."
    if os.path.isdir(absolute):
        return "it is a directory; give a file path"
    if not os.path.isdir(directory):
        return f"directory {directory!r} does not exist"
    try:
        if os.path.exists(absolute):
            with open(absolute, "a", encoding="utf-8"):
                pass
        # the writers replace the file with a temporary one from the same directory
        fd, probe = tempfile.mkstemp(prefix=".dbguard-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def write_each(jobs: list[tuple[str, str, Callable[[], Any]]]) -> list[str]:
    """Run each (label, path, write) job; one sentence per failed one."""
    errors = []
    for label, path, write in jobs:
        try:
            write()
        except OSError as exc:
            errors.append(f"dbguard: could not write the {label} to {path!r}: "
                          f"{exc.strerror or type(exc).__name__}. The other reports were "
                          f"written; free the path or choose another one.")
    return errors


def mark_interrupted(results: RunResults) -> None:
    results.interrupted = True
    if INTERRUPTED_NOTE not in results.notes:
        results.notes.insert(0, INTERRUPTED_NOTE)
