"""The awaiting line of database work that asgiref's sync_to_async runs in another thread.

`await Author.objects.acreate(...)` runs its query in a thread of asgiref's executor, whose
stack holds no frame of the test's code: the tap would find no call site. sync_to_async copies
the caller's context variables into that thread, so while recording, `SyncToAsync.__call__`
(entered in the event-loop thread, with the awaiting coroutines still on the stack) is wrapped
to put the awaiting user line into a context variable; the tap falls back to it when the
executor thread's own stack has no user frame. Code the user hands to sync_to_async keeps its
own line: the fallback is only taken when no user frame is found.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from ..events import NO_SITE
from .callsite import find_user_site
from .recorder import Hub

AWAITED_SITE: ContextVar[int] = ContextVar("dbguard_awaited_site", default=NO_SITE)


def install(hub: Hub, on_handoff: list[Callable[[], None]]) -> Callable[[], None]:
    """Wrap `SyncToAsync.__call__`; return what undoes it. `on_handoff` callables run each time
    work is handed to another thread while a test is recorded (the lock sampler listens)."""
    try:
        from asgiref.sync import SyncToAsync
    except ImportError:  # no asgiref: nothing runs in its threads
        return lambda: None
    original = SyncToAsync.__dict__["__call__"]
    classifier = hub.classifier

    async def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        if hub.rows is None:
            return await original(self, *args, **kwargs)
        for hook in on_handoff:
            hook()
        site = find_user_site(classifier, sys._getframe(1))
        token = AWAITED_SITE.set(site)
        try:
            return await original(self, *args, **kwargs)
        finally:
            with contextlib.suppress(ValueError):  # a context switched under us: leave it
                AWAITED_SITE.reset(token)

    __call__.__doc__ = original.__doc__
    __call__.__wrapped__ = original  # type: ignore[attr-defined]
    SyncToAsync.__call__ = __call__  # type: ignore[method-assign]

    def uninstall() -> None:
        SyncToAsync.__call__ = original  # type: ignore[method-assign]

    return uninstall
