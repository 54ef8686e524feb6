"""Parallel stress mode: what a stressed test is asked to do (the runner and watchdog live here)."""

from __future__ import annotations

from dataclasses import dataclass

# Threads per round when a test is stressed by --dbguard-stress-scope=all without a marker.
DEFAULT_THREADS = 4
DEFAULT_ROUNDS = 3
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class StressSpec:
    """A parsed @pytest.mark.stress(threads=4, rounds=3, timeout=10.0)."""

    threads: int = DEFAULT_THREADS
    rounds: int = DEFAULT_ROUNDS
    timeout: float = DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class StressPlan:
    """How one test is stressed in this run: the marker merged with the command line."""

    threads: int
    rounds: int
    timeout: float
    seed: int
    lock_wait_ms: int
    show_params: bool = False
