"""A stress round that did not finish in time: dump the stacks, stop the stuck backends.

The watchdog cancels then terminates the backends the stuck threads opened (and only those);
threads that still do not return are abandoned as daemon threads so the session goes on.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

from ..backends import for_vendor
from .facts import HangFacts
from .rounds import RoundResult
from .watchdog import BackendRegistry, Watchdog

# After a hang: time the threads get to return once their statements are cancelled, then once
# their backends are terminated. Both together stay well inside the promised 2 s.
CANCEL_GRACE_S = 0.4
TERMINATE_GRACE_S = 0.8


def handle_hang(result: RoundResult, threads: list[threading.Thread],
                done: list[threading.Event], started: float, *, timeout: float,
                registry: BackendRegistry, watchdog: Watchdog | None, lock_analysis: str,
                wrappers: dict[tuple[int, int], list[Any]],
                display_path: Callable[[str], str], own_files: tuple[str, ...]) -> HangFacts:
    stuck = [i for i, event in enumerate(done) if not event.is_set()]
    frames = sys._current_frames()
    stacks = {str(i): thread_stack(frames.get(t.ident or -1), display_path, own_files)
              for i, t in enumerate(threads)}
    graph = watchdog.snapshot() if watchdog else None
    cancelled: list[int] = []
    terminated: list[int] = []
    if watchdog is not None:
        # a statement can only be cancelled while it runs; idle backends wait for terminate
        running = {n["pid"] for n in (graph or {}).get("nodes", ()) if n["state"] == "active"}
        pids = [b.pid for b in registry.of_round(result.index)
                if b.thread in stuck and (graph is None or b.pid in running)]
        cancelled = watchdog.cancel(pids)
        wait_all(done, CANCEL_GRACE_S)
        still = [i for i, event in enumerate(done) if not event.is_set()]
        pids = [b.pid for b in registry.of_round(result.index) if b.thread in still]
        if pids:
            terminated = watchdog.terminate(pids)
            wait_all(done, TERMINATE_GRACE_S)
    abandoned = [i for i, event in enumerate(done) if not event.is_set()]
    for index in abandoned:
        close_abandoned(wrappers.get((result.index, index), ()), registry, terminated)
    for error in result.errors:
        if error.index in stuck and error.at_ms >= timeout * 1000.0:
            error.after_hang = True
    return HangFacts(
        round=result.index,
        timeout_s=timeout,
        stuck_threads=tuple(stuck),
        stacks=stacks,
        graph=graph,
        cancelled_pids=tuple(cancelled),
        terminated_pids=tuple(terminated),
        abandoned_threads=tuple(abandoned),
        ended_after_ms=round((time.perf_counter() - started) * 1000.0, 1),
        lock_analysis=lock_analysis,
    )


def close_abandoned(connections: Any, registry: BackendRegistry, terminated: list[int]) -> None:
    """Close the Django connections of a thread left behind, once their backend is gone.

    The thread waits in Python, not in the driver, and its server backend was terminated:
    closing the client side from here is safe, and the plugin's own thread does not leave a
    connection open. Connections of other vendors (nothing was terminated) stay as they are.
    """
    for conn in connections:
        backend = registry.pid_of(conn)
        if not for_vendor(conn.vendor).samples_locks or backend not in terminated:
            continue
        try:
            conn.inc_thread_sharing()
            conn.close()
        except Exception:
            pass  # best effort: the report already names the thread as abandoned


def wait_all(done: list[threading.Event], seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    for event in done:
        event.wait(max(0.0, deadline - time.perf_counter()))


def thread_stack(frame: FrameType | None, display_path: Callable[[str], str] = str,
                 own_files: tuple[str, ...] = ()) -> list[str]:
    """The thread's stack, outermost first, without the harness's and threading's own frames."""
    if frame is None:
        return []
    skipped = (*own_files, threading.__file__)
    entries = traceback.extract_stack(frame)
    return [
        f"{display_path(entry.filename)}:{entry.lineno} in {entry.name}"
        + (f": {entry.line.strip()}" if entry.line else "")
        for entry in entries
        if entry.filename not in skipped
    ]
