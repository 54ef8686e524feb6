"""Report writers: every format is one module with `write(path, results)` over one RunResults.

The formats are the table below; a run writes each one whose settings path is given.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .entries import RunResults


class Reporter(Protocol):
    def write(self, path: str, results: RunResults) -> None: ...


@dataclass(frozen=True)
class ReportFormat:
    name: str
    setting: str  # the Settings attribute holding the path, None when not asked for
    option: str  # the command-line option that asks for it
    module: str  # under pytest_dbguard.reporting; imported only when the format is written

    def reporter(self) -> Reporter:
        module: Reporter = importlib.import_module(f"{__name__}.{self.module}")  # type: ignore[assignment]
        return module


FORMATS = (
    ReportFormat("json", "json_path", "--dbguard-json", "json_report"),
    ReportFormat("markdown", "md_path", "--dbguard-md", "markdown"),
    ReportFormat("html", "html_path", "--dbguard-html", "html"),
    ReportFormat("sarif", "sarif_path", "--dbguard-sarif", "sarif"),
)


def write_requested(settings: object, results: RunResults) -> None:
    """Write every report format whose path the settings hold, in table order."""
    for report in FORMATS:
        path = getattr(settings, report.setting, None)
        if path:
            report.reporter().write(path, results)


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
