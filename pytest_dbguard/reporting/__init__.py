"""Report writers: every format is one module with `write(path, results)` over one RunResults.

The formats are the table below; a run writes each one whose settings path is given, each on
its own: a write that fails is one sentence, and the other reports are still written.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from .entries import RunResults


class Reporter(Protocol):
    def write(self, path: str, results: RunResults) -> None: ...


@dataclass(frozen=True)
class ReportFormat:
    name: str
    setting: str  # the Settings attribute holding the path, None when not asked for
    option: str | None  # the pytest option that asks for it (None: `dbguard report` only)
    module: str  # under pytest_dbguard.reporting; imported only when the format is written
    cli: str  # the `dbguard report` option that asks for it
    what: str  # what the file is, for `dbguard report --help`
    label: str = "report"  # what the file is, in the sentence a failed write gives

    def reporter(self) -> Reporter:
        module: Reporter = importlib.import_module(f"{__name__}.{self.module}")  # type: ignore[assignment]
        return module


FORMATS = (
    ReportFormat("json", "json_path", "--dbguard-json", "json_report", "--json",
                 "the JSON report, with the baseline verdict applied", "JSON report"),
    ReportFormat("markdown", "md_path", "--dbguard-md", "markdown", "--md",
                 "the Markdown summary (e.g. $GITHUB_STEP_SUMMARY)", "Markdown summary"),
    ReportFormat("html", "html_path", "--dbguard-html", "html", "--html",
                 "the self-contained HTML report", "HTML report"),
    ReportFormat("sarif", "sarif_path", "--dbguard-sarif", "sarif", "--sarif",
                 "SARIF 2.1.0 for code scanning", "SARIF report"),
    # a single run has pytest's own --junitxml; shards combined have no pytest run left
    ReportFormat("junit", "junitxml_path", None, "junit", "--junitxml",
                 "JUnit XML, one testcase per recorded test", "JUnit XML report"),
)


def write_requested(settings: object, results: RunResults) -> list[str]:
    """Write every report format whose path the settings hold, in table order, each on its own;
    one sentence per write that failed (the other formats are still written).

    `settings` is the run's Settings, or the paths `dbguard report` was given under the same
    attribute names: a run and its shards combined write through this one loop.
    """
    errors = []
    for report in FORMATS:
        path = getattr(settings, report.setting, None)
        if path:
            error = write_one(report.label, path,
                              functools.partial(report.reporter().write, path, results))
            if error:
                errors.append(error)
    return errors


def write_one(label: str, path: str, write: Callable[[], object]) -> str | None:
    """Run one end-of-run write; the sentence saying it failed, or None."""
    try:
        write()
    except OSError as exc:
        return (f"dbguard: could not write the {label} to {path!r}: "
                f"{exc.strerror or type(exc).__name__}. The other reports were written; free "
                f"the path or choose another one.")
    return None


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
