"""The --dbguard-json report: versioned schema, written atomically."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any

from .entries import SCHEMA, summarise


def build(entries: list[dict[str, Any]], shared_fixture_queries: int = 0,
          extra_summary: dict[str, Any] | None = None,
          summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """The document; `summary` when the caller already has it (RunResults.summary())."""
    summary = dict(summary) if summary is not None else summarise(entries,
                                                                  shared_fixture_queries)
    if extra_summary:
        summary.update(extra_summary)
    tests = sorted(entries, key=lambda e: e["nodeid"])
    return {"schema": SCHEMA, "summary": summary, "tests": tests}


def write_atomic(path: str, text: str) -> None:
    """Write next to the target and rename over it: readers never see half a file."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".dbguard-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def dumps(document: dict[str, Any]) -> str:
    """Indented down to the summary, then one test per line.

    Readable and diff-friendly, and fast: json only uses its C encoder without `indent`, so each
    test is encoded compactly (10k tests: about 0.3 s instead of 2.4 s).
    """
    head = {key: value for key, value in document.items() if key != "tests"}
    text = json.dumps(head, indent=2, ensure_ascii=False)
    if "tests" not in document:
        return text + "\n"
    tests = ",\n".join("    " + json.dumps(test, ensure_ascii=False)
                        for test in document["tests"])
    return (text[:-2] + ',\n  "tests": [' + ("\n" + tests + "\n  " if tests else "")
            + "]\n}\n")


def write(path: str, document: dict[str, Any]) -> None:
    write_atomic(path, dumps(document))
