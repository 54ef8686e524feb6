"""Load groups: which model instances came from one multi-row query (the `nplusone` rule's key).

An N+1 is one queryset's rows whose relation is then loaded one row at a time. Instances
created with create()/save() or fetched alone with get()/first() never share a group, so lazy
loads on them cannot add up to an N+1 however many there are. Installed only when `nplusone`
is on; tagging costs one attribute store per loaded row, and nothing per query.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from .recorder import Hub

# Instances of one group carry the group's number here, on Django's per-instance ModelState:
# never in the instance's own __dict__, which user code compares and serialises.
ATTR = "dbguard_load"
# select_related objects ride along with the row that loaded them, this many levels deep
SELECT_RELATED_DEPTH = 4

_next_group = itertools.count(1).__next__


def load_group(instance: Any) -> int:
    """The load group of a model instance; 0 when it was not loaded with other rows."""
    state = getattr(instance, "_state", None)
    return getattr(state, ATTR, 0) if state is not None else 0


def _tag(objects: Any, group: int, with_related: bool) -> None:
    for obj in objects:
        state = getattr(obj, "_state", None)
        if state is None:
            return  # values(), values_list(): no instances to tie lazy loads to
        state.dbguard_load = group
        if with_related:
            cache = state.__dict__.get("fields_cache")
            if cache:
                _tag_related(cache, group, SELECT_RELATED_DEPTH)


def _tag_related(cache: dict[str, Any], group: int, depth: int) -> None:
    """Tag what select_related put in a fields_cache (not empty), `depth` levels deep."""
    for related in cache.values():
        related_state = getattr(related, "_state", None)
        if related_state is not None and getattr(related_state, ATTR, 0) != group:
            related_state.dbguard_load = group
            if depth > 1:
                deeper = related_state.__dict__.get("fields_cache")
                if deeper:
                    _tag_related(deeper, group, depth - 1)


def install(hub: Hub) -> Callable[[], None]:
    """Wrap queryset evaluation to tag instances loaded together; returns the undo function."""
    from django.db.models.query import QuerySet, RawQuerySet

    queryset: Any = QuerySet
    raw_queryset: Any = RawQuerySet
    fetch_all = queryset._fetch_all
    iterator = queryset._iterator
    raw_fetch_all = raw_queryset._fetch_all

    def _tag_after(self: Any) -> None:
        cache = self._result_cache
        if cache is not None and len(cache) > 1:
            _tag(cache, _next_group(), bool(self.query.select_related))

    def _fetch_all(self: Any) -> None:
        if self._result_cache is not None or hub.rows is None:
            return fetch_all(self)
        fetch_all(self)
        _tag_after(self)
        return None

    # for the eager-loads probe, which then wraps Django's own _fetch_all and tags itself
    _fetch_all.dbguard_tag_after = _tag_after  # type: ignore[attr-defined]
    _fetch_all.__wrapped__ = fetch_all  # type: ignore[attr-defined]

    def _iterator(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        # iterator(): rows arrive one chunk at a time, all of them from one query
        if hub.rows is None:
            yield from iterator(self, *args, **kwargs)
            return
        group = _next_group()
        related = bool(self.query.select_related)
        for obj in iterator(self, *args, **kwargs):
            _tag((obj,), group, related)
            yield obj

    def _raw_fetch_all(self: Any) -> None:
        if self._result_cache is not None or hub.rows is None:
            return raw_fetch_all(self)
        raw_fetch_all(self)
        cache = self._result_cache
        if cache is not None and len(cache) > 1:
            _tag(cache, _next_group(), False)

    queryset._fetch_all = _fetch_all
    queryset._iterator = _iterator
    raw_queryset._fetch_all = _raw_fetch_all

    def uninstall() -> None:
        queryset._fetch_all = fetch_all
        queryset._iterator = iterator
        raw_queryset._fetch_all = raw_fetch_all

    return uninstall
