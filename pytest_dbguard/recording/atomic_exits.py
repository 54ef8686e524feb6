"""Where a database error raised inside `atomic` meets the end of its block.

An error that leaves its atomic block rolls the block back, as Django intends. One caught by code
inside the block (`with atomic(): try: ... except IntegrityError: pass`) leaves the block to end
on a broken transaction: Django rolls the whole block back at its exit (needs_rollback), or
PostgreSQL refuses to commit it, or the next query raises TransactionManagementError. The end
state of the connection shows none of this once the block is gone, so `Atomic.__exit__` is
wrapped while a session records: it costs one dict lookup per block unless an error was raised
directly inside that block.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ..facts import BlockExit
from .callsite import THIRD_PARTY, USER, FrameClassifier
from .psycopg import driver_status

_CONTEXTLIB = os.sep + "contextlib.py"


class AtomicExits:
    """Follows each failed query's exception to the exit of the innermost atomic block."""

    def __init__(self, classifier: FrameClassifier) -> None:
        self.classifier = classifier
        # id(Atomic) -> [(exception, connection)] raised directly inside that block
        self.pending: dict[int, list[tuple[BaseException, Any]]] = {}
        # id(exception) -> how the block it was swallowed in ended
        self.swallowed: dict[int, BlockExit] = {}
        self._original: Any = None

    def install(self) -> None:
        from django.db.transaction import Atomic

        original = self._original = Atomic.__dict__["__exit__"]
        watch = self

        def __exit__(atomic: Any, exc_type: Any, exc_value: Any, tb: Any) -> Any:
            waiting = watch.pending.pop(id(atomic), None) if watch.pending else None
            if waiting is not None:
                watch.exited(atomic, waiting, exc_value, sys._getframe(1))
            return original(atomic, exc_type, exc_value, tb)

        __exit__.__wrapped__ = original  # type: ignore[attr-defined]
        Atomic.__exit__ = __exit__  # type: ignore[method-assign]

    def uninstall(self) -> None:
        if self._original is not None:
            from django.db.transaction import Atomic

            Atomic.__exit__ = self._original  # type: ignore[method-assign]
            self._original = None

    def reset(self) -> None:
        if self.pending:
            self.pending = {}
        if self.swallowed:
            self.swallowed = {}

    def watch(self, exc: BaseException, wrapper: Any) -> None:
        """A query failed on `wrapper`: wait for the exit of the block it failed in."""
        blocks = getattr(wrapper, "atomic_blocks", None)
        if blocks:
            self.pending.setdefault(id(blocks[-1]), []).append((exc, wrapper))

    def exited(self, atomic: Any, waiting: list[tuple[BaseException, Any]],
               exc_value: BaseException | None, caller: Any) -> None:
        from .txstate import exception_chain

        if type(exc_value).__name__ == "TransactionManagementError":
            # Django raises it `from` the error swallowed earlier in the block: a consequence
            # of that error, not the error leaving the block
            leaving = {id(exc_value)}
        else:
            leaving = {id(e) for e in exception_chain(exc_value)}
        for exc, wrapper in waiting:
            if id(exc) in leaving:
                # The error leaves its block, which rolls back to its savepoint: handled as
                # Django intends. A block without a savepoint (`atomic(savepoint=False)`, as
                # Model.save uses for inherited models) hands the rollback to the block around
                # it instead: follow the error there.
                blocks, sids = wrapper.atomic_blocks, wrapper.savepoint_ids
                if len(blocks) >= 2 and blocks[-1] is atomic and sids and sids[-1] is None:
                    self.pending.setdefault(id(blocks[-2]), []).append((exc, wrapper))
                continue
            site = self._block_site(caller)
            if site is None:
                continue  # a block of Django's own (TestCase, pytest-django's db fixture)
            self.swallowed[id(exc)] = BlockExit(site, _outcome(wrapper, exc_value))

    def _block_site(self, frame: Any) -> str | None:
        """The project line whose `with atomic()` (or @atomic function) ends the block."""
        classifier = self.classifier
        while frame is not None and frame.f_code.co_filename.endswith(_CONTEXTLIB):
            frame = frame.f_back  # @transaction.atomic: ContextDecorator calls __exit__
        if frame is None:
            return None
        code = frame.f_code
        kind = classifier.kinds.get(id(code))
        if kind is None:
            kind = classifier.classify(code)
        if kind != USER and kind != THIRD_PARTY:
            return None
        return f"{classifier.display_path(code.co_filename)}:{frame.f_lineno}"


def _outcome(wrapper: Any, exc_value: BaseException | None) -> str:
    if exc_value is not None:
        text = str(exc_value).strip().splitlines()
        return f"raised {type(exc_value).__name__}" + (f": {text[0]}" if text else "")
    if wrapper.needs_rollback:
        return "rolled back at its exit, silently undoing every write made in it"
    if driver_status(wrapper.connection) == "in error":
        return ("could not commit: PostgreSQL aborted the transaction at the error, so the "
                "block fails at its exit")
    return ("committed without the failed statement; on PostgreSQL the same error aborts the "
            "transaction and the block fails at its exit")
