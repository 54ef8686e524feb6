"""Statements run on raw psycopg connections, for the rules that read SQL outside Django.

Only connections the psycopg probe saw the code under test open are watched: their
`cursor_factory` is swapped for a subclass whose `execute` notes the statement's text, call site
and `prepare=True`, and reports it again once it succeeded (raw_writes follows the writes that
commit). Django's own connections keep psycopg's cursors: their queries cost nothing
more.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

# (connection, sql, prepared, caller frame), before the statement runs
Note = Callable[[Any, str, bool, Any], None]
# (connection, sql, caller frame), after it ran without error
Done = Callable[[Any, str, Any], None]

_SUBCLASSES: dict[tuple[type, int, int], type] = {}


def watch(conn: Any, note: Note, done: Done) -> None:
    """Make `conn`'s client cursors report each statement to `note` before it runs and to
    `done` once it succeeded (both must be cheap)."""
    base = getattr(conn, "cursor_factory", None)
    if not isinstance(base, type) or getattr(base, "dbguard_note", None) is note:
        return
    conn.cursor_factory = _subclass(base, note, done)


def _subclass(base: type, note: Note, done: Done) -> type:
    key = (base, id(note), id(done))
    cls = _SUBCLASSES.get(key)
    if cls is not None:
        return cls
    if _is_async(base):
        class AsyncWatched(base):  # type: ignore[misc, valid-type]
            dbguard_note = note

            async def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
                text, caller = _text(query, self), sys._getframe(1)
                note(self.connection, text, bool(kwargs.get("prepare")), caller)
                result = await super().execute(query, *args, **kwargs)
                done(self.connection, text, caller)
                return result

            async def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
                text, caller = _text(query, self), sys._getframe(1)
                note(self.connection, text, False, caller)
                result = await super().executemany(query, *args, **kwargs)
                done(self.connection, text, caller)
                return result

        cls = AsyncWatched
    else:
        class Watched(base):  # type: ignore[misc, valid-type]
            dbguard_note = note

            def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
                text, caller = _text(query, self), sys._getframe(1)
                note(self.connection, text, bool(kwargs.get("prepare")), caller)
                result = super().execute(query, *args, **kwargs)
                done(self.connection, text, caller)
                return result

            def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
                text, caller = _text(query, self), sys._getframe(1)
                note(self.connection, text, False, caller)
                result = super().executemany(query, *args, **kwargs)
                done(self.connection, text, caller)
                return result

        cls = Watched
    cls.__name__ = cls.__qualname__ = base.__name__
    _SUBCLASSES[key] = cls
    return cls


def _is_async(base: type) -> bool:
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and issubclass(base, psycopg.AsyncCursor)


def _text(query: Any, cursor: Any) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes):
        return query.decode("utf-8", "replace")
    try:  # psycopg.sql.Composed / SQL
        return str(query.as_string(cursor.connection))
    except Exception:
        return repr(query)
