"""What the eager-loads probe leaves on loaded objects, and the reads that flag it.

An instance an eager queryset loaded carries {descriptor: EagerPath} on its ModelState; the
related descriptors' wrapped `__get__` flags the path it finds there. Many-valued
`Prefetch(to_attr=...)` lists become a `WatchedList`. Reads made while Django's prefetch
machinery runs (it walks the same descriptors and lists) are not the code's: `LOCAL.busy`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

# On ModelState: {descriptor: EagerPath} for the relations an eager queryset filled.
ATTR = "dbguard_eager"
LOCAL = threading.local()  # .busy: Django's prefetch is running; .stack: evaluations


class EagerPath:
    """One eager path of one queryset line in the current test; flagged when read."""

    __slots__ = ("key", "model", "holder", "method", "path", "to_attr", "site", "evaluations",
                 "rows", "loaded", "used", "unit", "forward")

    def __init__(self, key: tuple[Any, ...], model: str, holder: str, method: str, path: str,
                 to_attr: str | None, site: int, unit: str) -> None:
        self.key = key
        self.model, self.holder = model, holder
        self.method, self.path, self.to_attr = method, path, to_attr
        self.site, self.unit = site, unit
        self.evaluations = self.rows = self.loaded = 0
        self.used = self.forward = False


class _Marks(dict):  # type: ignore[type-arg]
    """The map on an instance's state; pickles (and deep-copies) as an empty dict, so that a
    cached or copied instance carries no descriptors and no paths. Reads of the copy are out
    of sight, so a copied instance counts as read."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        for path in self.values():
            path.used = True
        return (dict, ())


def busy() -> bool:
    return bool(getattr(LOCAL, "busy", 0))


class WatchedList(list):  # type: ignore[type-arg]
    """A Prefetch(to_attr=...) list: reading it (iterating, len(), indexing) flags its path."""

    __slots__ = ("dbguard_path",)
    dbguard_path: EagerPath

    def _read(self) -> None:
        if not busy():
            self.dbguard_path.used = True

    def __iter__(self) -> Iterator[Any]:
        self._read()
        return list.__iter__(self)

    def __len__(self) -> int:
        self._read()
        return list.__len__(self)

    def __getitem__(self, index: Any) -> Any:
        self._read()
        return list.__getitem__(self, index)

    def __contains__(self, item: object) -> bool:
        self._read()
        return list.__contains__(self, item)

    def __reversed__(self) -> Iterator[Any]:
        self._read()
        return list.__reversed__(self)

    def __reduce__(self) -> tuple[Any, ...]:
        self._read()
        return (list, (list.copy(self),))


def mark(objects: list[Any], marks: dict[Any, EagerPath]) -> None:
    shared = _Marks(marks)
    for obj in objects:
        state = obj.__dict__.get("_state")
        if state is None:
            continue
        found = state.__dict__.get(ATTR)
        state.__dict__[ATTR] = shared if found is None else _Marks({**found, **marks})


def cache_name(descriptor: Any) -> str:
    """The key of a forward / reverse one-to-one descriptor's value in fields_cache."""
    owner = getattr(descriptor, "field", None) or descriptor.related
    name = getattr(owner, "cache_name", None)  # Django 5.1+; get_cache_name() before
    return name if isinstance(name, str) else owner.get_cache_name()


def watching(original: Callable[..., Any], settle: Callable[[Any], None]
             ) -> Callable[..., Any]:
    # named __get__: the body-units walk tells attribute reads by a dunder frame name
    def __get__(self: Any, instance: Any, cls: Any = None) -> Any:
        if instance is not None:
            state = instance.__dict__.get("_state")
            marks = state.__dict__.get(ATTR) if state is not None else None
            if marks:
                path = marks.get(self)
                if path is not None and not path.used and not busy():
                    path.used = True
                    settle(self)
        return original(self, instance, cls)

    __get__.__wrapped__ = original  # type: ignore[attr-defined]
    return __get__


class Watcher:
    """Watches reads of the descriptors whose paths nothing has read yet, and no others.

    A descriptor is watched by giving it a subclass of its class whose __get__ flags the path
    it finds in the instance's marks, until every path it was marked with is read (or the test
    body ends): reads through other relations (fixtures saving objects, rows no eager queryset
    loaded) and the reads after the first one stay Django's own.
    """

    def __init__(self) -> None:
        self._classes: dict[type, type] = {}
        # watched descriptor -> (its own class, the paths it was marked with)
        self.pending: dict[Any, tuple[type, list[EagerPath]]] = {}

    def watch(self, descriptor: Any, path: EagerPath) -> None:
        found = self.pending.get(descriptor)
        if found is not None:
            if path not in found[1]:
                found[1].append(path)
            return
        cls = type(descriptor)
        sub = self._classes.get(cls)
        if sub is None:
            sub = self._classes[cls] = type(cls.__name__, (cls,), {
                "__slots__": (), "__get__": watching(cls.__get__, self.settle),
                "__module__": cls.__module__, "__qualname__": cls.__qualname__})
        self.pending[descriptor] = (cls, [path])
        descriptor.__class__ = sub

    def settle(self, descriptor: Any) -> None:
        """A path of `descriptor` was read: stop watching it once all of its paths were."""
        found = self.pending.get(descriptor)
        if found is not None and all(path.used for path in found[1]):
            del self.pending[descriptor]
            descriptor.__class__ = found[0]

    def release(self) -> None:
        """Give every watched descriptor its own class back."""
        pending, self.pending = self.pending, {}
        for descriptor, (cls, _) in pending.items():
            descriptor.__class__ = cls
