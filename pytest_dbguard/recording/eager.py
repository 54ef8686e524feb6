"""Eager loads: the select_related / prefetch_related paths the test body's querysets filled,
and whether anything read them (the facts of the `unused-eager-load` rule).

When a queryset that eager-loads is evaluated in the call phase, each path (a select_related
field chain, each level of a prefetch lookup) becomes an `EagerPath`, shared by every
evaluation of querysets built on the same line. The instances the path hangs from carry a map
{descriptor: path} on their ModelState; the related descriptors' `__get__` is wrapped to flag
the path used when it finds itself in that map (one dict lookup on the instance's state, and
nothing at all for instances no eager queryset loaded). Many-valued `Prefetch(to_attr=...)`
lists are plain attributes: they become a list subclass that flags its path when read.

Django's own prefetch machinery walks the same descriptors and lists; reads made while it runs
are not the code's. Installed only when `unused-eager-load` is on; nothing here runs per query.
Only the descriptors a path was marked with are watched, and only until the test body ends
(eager_marks.Watcher); a queryset that eager-loads nothing is evaluated as Django does, with
the load-groups tagging in the same wrapper when that probe is installed too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

from ..events import NO_SITE
from ..facts import EAGER_LOADS, EagerLoad
from .callsite import find_user_site
from .eager_marks import LOCAL, EagerPath, WatchedList, Watcher, cache_name, mark
from .recorder import Hub, TestRecorder

# On Query: {(method, argument): site index} where select_related / prefetch_related was called.
SITES_ATTR = "dbguard_eager_sites"
# select_related() without fields follows forward foreign keys this many levels deep at most
DERIVED_DEPTH = 5


class EagerProbe:
    """Records eager paths of the test body's querysets and flags the ones read."""

    name = EAGER_LOADS

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.paths: dict[tuple[Any, ...], EagerPath] = {}
        self._descriptors: dict[tuple[type, str], Any] = {}
        self._undo: list[tuple[Any, str, Any]] = []
        self.watcher = Watcher()
        self._cache_names: dict[Any, str] = {}
        from django.db.models.fields import related_descriptors as rd

        self._single = (rd.ForwardManyToOneDescriptor, rd.ReverseOneToOneDescriptor)
        self._forward = rd.ForwardManyToOneDescriptor
        self._many = rd.ReverseManyToOneDescriptor

    # -- probe protocol ----------------------------------------------------------------------
    def start_test(self, recorder: TestRecorder) -> None:
        self.paths = {}
        if self.watcher.pending:
            self.watcher.release()

    def end_phase(self, recorder: TestRecorder, phase: str) -> None:
        if phase != "call":
            return
        if self.watcher.pending:
            self.watcher.release()  # reads after the body are not judged
        paths, self.paths = self.paths, {}
        # the rule judges the paths nothing read; the ones read are left out of the facts
        unused = [p for p in paths.values() if not p.used]
        if not unused:
            recorder.facts[self.name] = ()
            return
        sites = self.hub.catalog.sites
        recorder.facts[self.name] = tuple(
            EagerLoad(model=p.model, holder=p.holder, method=p.method, path=p.path,
                      to_attr=p.to_attr, site=sites[p.site] if p.site != NO_SITE else None,
                      evaluations=p.evaluations, rows=p.rows, loaded=p.loaded, used=p.used,
                      unit=p.unit, forward=p.forward)
            for p in unused)

    # -- what a queryset asked for, and where ----------------------------------------------
    def note_built(self, clone: Any, method: str, names: tuple[Any, ...]) -> None:
        site = find_user_site(self.hub.classifier, sys._getframe(1))
        query = clone.query
        found = getattr(query, SITES_ATTR, None)
        sites = dict(found) if found else {}
        for name in names:
            text = name if isinstance(name, str) else getattr(name, "prefetch_through", None)
            if text is not None:
                sites.setdefault((method, text), site)
        setattr(query, SITES_ATTR, sites)

    def judging(self) -> bool:
        """True while the test body's own queries are recorded (not set-up, not shared)."""
        hub = self.hub
        rows, recorder = hub.rows, hub.recorder
        return (rows is not None and recorder is not None
                and rows is recorder.phase_rows.get("call"))

    def begin(self, queryset: Any) -> _Evaluation:
        site = find_user_site(self.hub.classifier, sys._getframe(1))
        hub = self.hub
        unit = hub.unit_labels.get(hub.unit, "") if hub.unit else ""
        return _Evaluation(self, queryset, site, unit)

    def descriptor(self, model: type, name: str) -> Any:
        key = (model, name)
        if key not in self._descriptors:
            found = None
            for klass in model.__mro__:
                if name in klass.__dict__:
                    found = klass.__dict__[name]
                    break
            self._descriptors[key] = found
        return self._descriptors[key]

    def cache_name(self, descriptor: Any) -> str:
        name = self._cache_names.get(descriptor)
        if name is None:
            name = self._cache_names[descriptor] = cache_name(descriptor)
        return name

    # -- installing ----------------------------------------------------------------------------
    def install(self) -> Callable[[], None]:
        from django.db.models import query as query_module
        from django.db.models.query import QuerySet

        qs: Any = QuerySet
        probe = self
        hub = self.hub
        select_related, prefetch_related = qs.select_related, qs.prefetch_related
        fetch_all, iterator = qs._fetch_all, qs._iterator
        # the load-groups probe's wrapper, when installed: one wrapper does both jobs
        tag_after = getattr(fetch_all, "dbguard_tag_after", None)
        if tag_after is not None:
            fetch_all = fetch_all.__wrapped__
        prefetch_objects = query_module.prefetch_related_objects
        prefetch_level = query_module.prefetch_one_level

        def _select_related(self: Any, *fields: Any) -> Any:
            clone = select_related(self, *fields)
            probe.note_built(clone, "select_related", fields or ("",))
            return clone

        def _prefetch_related(self: Any, *lookups: Any) -> Any:
            clone = prefetch_related(self, *lookups)
            probe.note_built(clone, "prefetch_related", lookups)
            return clone

        def _fetch_all(self: Any) -> None:
            if self._result_cache is not None or hub.rows is None:
                return fetch_all(self)
            prefetch = self._prefetch_related_lookups
            if not (self.query.select_related or prefetch) or not probe.judging():
                fetch_all(self)
                if tag_after is not None:
                    tag_after(self)
                return None
            evaluation = probe.begin(self)
            if prefetch:
                with evaluation.current():  # prefetch_one_level reports to it
                    fetch_all(self)
            else:
                fetch_all(self)
            if tag_after is not None:
                tag_after(self)
            evaluation.rows(self._result_cache or [])
            return None

        def _iterator(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            rows = iterator(self, *args, **kwargs)
            if not (self.query.select_related or self._prefetch_related_lookups) or \
                    not probe.judging():
                yield from rows
                return
            evaluation = probe.begin(self)
            while True:
                with evaluation.current():  # a chunk's prefetch runs inside next()
                    obj = next(rows, _END)
                if obj is _END:
                    return
                evaluation.rows((obj,))
                yield obj

        def _prefetch_related_objects(*args: Any, **kwargs: Any) -> Any:
            LOCAL.busy = getattr(LOCAL, "busy", 0) + 1
            try:
                return prefetch_objects(*args, **kwargs)
            finally:
                LOCAL.busy -= 1

        def _prefetch_one_level(instances: Any, prefetcher: Any, lookup: Any, level: int
                                ) -> Any:
            result = prefetch_level(instances, prefetcher, lookup, level)
            stack = getattr(LOCAL, "stack", None)
            if stack and instances:
                stack[-1].prefetched(instances, lookup, level, result[0])
            return result

        for owner, name, new in (
                (qs, "select_related", _select_related),
                (qs, "prefetch_related", _prefetch_related),
                (qs, "_fetch_all", _fetch_all),
                (qs, "_iterator", _iterator),
                (query_module, "prefetch_related_objects", _prefetch_related_objects),
                (query_module, "prefetch_one_level", _prefetch_one_level)):
            self._undo.append((owner, name, getattr(owner, name)))
            setattr(owner, name, new)
        return self.uninstall

    def uninstall(self) -> None:
        self.watcher.release()
        undo, self._undo = self._undo, []
        for owner, name, original in reversed(undo):
            setattr(owner, name, original)


_END = object()

class _Evaluation:
    """One queryset evaluation in the test body: turns what it loaded into marked paths."""

    __slots__ = ("probe", "model", "sites", "site", "unit", "select", "known", "counted")

    def __init__(self, probe: EagerProbe, queryset: Any, site: int, unit: str) -> None:
        self.probe = probe
        self.model = queryset.model
        self.sites: dict[tuple[str, str], int] = getattr(queryset.query, SITES_ATTR, None) or {}
        self.site = site
        self.unit = unit
        self.select = queryset.query.select_related
        self.known = getattr(queryset, "_known_related_objects", None)
        self.counted: set[tuple[Any, ...]] | None = None

    def current(self) -> Any:
        return _Current(self)

    def path(self, holder: type, method: str, name: str, to_attr: str | None) -> EagerPath:
        site = self.site
        for (asked_by, asked), at in self.sites.items():
            if asked_by == method and (asked in ("", name) or asked.startswith(name + "__")
                                       or name.startswith(asked + "__")):
                site = at
                break
        key = (site, self.model, method, name, to_attr)
        probe = self.probe
        found = probe.paths.get(key)
        if found is None:
            found = probe.paths[key] = EagerPath(key, self.model.__name__, holder.__name__,
                                                 method, name, to_attr, site, self.unit)
        counted = self.counted
        if counted is None:
            counted = self.counted = set()
        if key not in counted:
            counted.add(key)
            found.evaluations += 1
        return found

    # -- select_related: the rows' fields_cache, level by level -----------------------------
    def rows(self, objects: Any) -> None:
        if not self.select or not objects or "_state" not in getattr(objects[0], "__dict__", {}):
            return  # values() / values_list(): Django ignores select_related there
        self._select(list(objects), self.select, "", 0)

    def _select(self, objects: list[Any], tree: Any, prefix: str, depth: int) -> None:
        probe = self.probe
        model = type(objects[0])
        if tree is True:  # select_related(): every non-null forward FK Django followed
            if depth >= DERIVED_DEPTH:
                return
            cache = objects[0]._state.fields_cache
            known = {f.name for f in self.known} if self.known else ()
            tree = {name: True for name in cache if name not in known and isinstance(
                probe.descriptor(model, name), probe._forward)}
        marks: dict[Any, EagerPath] = {}
        deeper = []
        for name, sub in tree.items():
            descriptor = probe.descriptor(model, name)
            if not isinstance(descriptor, probe._single):
                continue
            key = probe.cache_name(descriptor)
            path = self.path(model, "select_related", prefix + name, None)
            if path.used and not sub:
                continue  # read already in this test: nothing left to judge on these rows
            related = [o._state.fields_cache.get(key) for o in objects]
            present = [r for r in related if r is not None]
            if not path.used:
                path.forward = isinstance(descriptor, probe._forward)
                path.rows += len(objects)
                path.loaded += len(present)
                marks[descriptor] = path
            if sub and present:
                deeper.append((present, sub, prefix + name + "__"))
        if marks:
            watch = probe.watcher.watch
            for descriptor, path in marks.items():
                watch(descriptor, path)
            mark(objects, marks)
        for present, sub, deeper_prefix in deeper:
            self._select(present, sub, deeper_prefix, depth + 1)

    # -- prefetch_related: one call of prefetch_one_level ------------------------------------
    def prefetched(self, instances: list[Any], lookup: Any, level: int,
                   related: list[Any]) -> None:
        probe = self.probe
        through = lookup.prefetch_through.split("__")
        name = "__".join(through[:level + 1])
        to_attr, as_attr = lookup.get_current_to_attr(level)
        first = instances[0]
        if "_state" not in getattr(first, "__dict__", {}):
            return
        if as_attr:
            values = [obj.__dict__.get(to_attr) for obj in instances]
            if not all(type(value) is list for value in values):
                return  # a single object under to_attr: a plain attribute, reads unseen
            path = self.path(type(first), "prefetch_related", name, to_attr)
            for obj, value in zip(instances, values, strict=True):
                watched = WatchedList(value)
                watched.dbguard_path = path
                obj.__dict__[to_attr] = watched
        else:
            descriptor = probe.descriptor(type(first), through[level])
            if not isinstance(descriptor, (*probe._single, probe._many)):
                return  # generic foreign keys and custom prefetchers: not judged
            path = self.path(type(first), "prefetch_related", name, None)
            path.forward = isinstance(descriptor, probe._forward)
            if not path.used:
                probe.watcher.watch(descriptor, path)
                mark(instances, {descriptor: path})
        path.rows += len(instances)
        path.loaded += len(related)


class _Current:
    """Makes an evaluation the one prefetch_one_level reports to, on this thread."""

    __slots__ = ("evaluation",)

    def __init__(self, evaluation: _Evaluation) -> None:
        self.evaluation = evaluation

    def __enter__(self) -> None:
        stack = getattr(LOCAL, "stack", None)
        if stack is None:
            stack = LOCAL.stack = []
        stack.append(self.evaluation)

    def __exit__(self, *exc: object) -> None:
        LOCAL.stack.pop()
