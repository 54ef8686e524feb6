"""Path-valued options: their ini keys, empty or shared paths, and paths pytest took for tests."""

from __future__ import annotations

import inspect
import os
from typing import Any

import pytest

# option -> (ini key, what the file is)
PATH_OPTIONS = {
    "--dbguard-json": ("dbguard_json", "the per-test JSON report"),
    "--dbguard-md": ("dbguard_md", "the Markdown summary"),
    "--dbguard-html": ("dbguard_html", "the HTML report"),
    "--dbguard-sarif": ("dbguard_sarif", "the SARIF report"),
    "--dbguard-baseline": ("dbguard_baseline", "the query baseline file"),
}


def add_inis(parser: pytest.Parser) -> None:
    for option, (ini, what) in PATH_OPTIONS.items():
        parser.addini(ini, type="string", default="",
                      help=f"Path of {what}, relative to the rootdir (same as {option}).")


def path_value(config: pytest.Config, option: str) -> tuple[str | None, str]:
    """The path an option or its ini key gives (the option wins), and where it came from.

    A relative ini path is read against the rootdir, so the run's directory does not matter.
    """
    ini = PATH_OPTIONS[option][0]
    value = config.getoption(option[2:].replace("-", "_"))
    if value is not None:
        if not str(value).strip():
            raise pytest.UsageError(f"dbguard: {option} needs a file path, got an empty string. "
                                    f"Write {option}=PATH or set {ini} in the ini file.")
        return str(value), option
    from_ini = str(config.getini(ini) or "").strip()
    if not from_ini:
        return None, option
    return os.path.join(str(config.rootpath), os.path.expanduser(from_ini)), f"ini {ini}"


def check_distinct(paths: dict[str, str]) -> None:
    """Two outputs on one path would overwrite each other (or the baseline they read)."""
    seen: dict[str, str] = {}
    for source, path in paths.items():
        key = os.path.normcase(os.path.realpath(path))
        if key in seen:
            raise pytest.UsageError(
                f"dbguard: {seen[key]} and {source} name the same file {path!r}; one would "
                f"overwrite the other. Give each its own path.")
        seen[key] = source


def check_separate_path_args(early_config: pytest.Config, args: list[str]) -> None:
    """`--dbguard-json /tmp/r.json` with that file existing: pytest chose its rootdir and ini
    file reading the path as a test path, before this plugin's options were known. Name the
    option and the fix instead of letting Django fail on the settings it could not find."""
    for i, arg in enumerate(args[:-1]):
        if arg == "--":
            return
        if arg not in PATH_OPTIONS:
            continue
        value = args[i + 1]
        if value.startswith("-") or not os.path.exists(value):
            continue
        chosen = _setup_without_option_values(early_config)
        if chosen is None or chosen == (early_config.rootpath, early_config.inipath):
            continue
        ini = PATH_OPTIONS[arg][0]
        raise pytest.UsageError(
            f"dbguard: {arg} {value} is a separate argument naming an existing path, so pytest "
            f"took it for a test path and chose rootdir {early_config.rootpath} (ini file: "
            f"{early_config.inipath or 'none'}) before dbguard could read it. Write "
            f"{arg}={value}, or set {ini} in the ini file.")


def _setup_without_option_values(early_config: pytest.Config) -> tuple[Any, Any] | None:
    """(rootdir, ini path) pytest picks when the option values are not read as test paths."""
    try:
        from _pytest.config.findpaths import determine_setup
    except ImportError:
        return None
    # parsed again once the plugins were loaded: our options took their values this time
    ns = early_config.known_args_namespace
    offered: dict[str, Any] = {
        "inifile": ns.inifilename,
        "override_ini": ns.override_ini,
        "args": ns.file_or_dir,
        "rootdir_cmd_arg": ns.rootdir or None,
        "invocation_dir": early_config.invocation_params.dir,
    }
    try:
        wanted = inspect.signature(determine_setup).parameters
        found = determine_setup(**{k: v for k, v in offered.items() if k in wanted})
    except Exception:
        return None  # a pytest whose internals differ: no check rather than a wrong one
    return found[0], found[1]
