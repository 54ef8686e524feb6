"""Finds the user frame behind a query cheaply (code objects are classified once and cached),
and what Django was doing around it: a lazy load, a template render, a cascade."""

from __future__ import annotations

import os
import sys
import sysconfig
from types import CodeType, FrameType
from typing import Any

from ..events import NO_CONTEXT, NO_SITE, CallSite, Catalog, QueryContext
from .framekinds import (
    DB_FIXTURE,
    IN_CONTEXT_PROCESSORS,
    IN_DELETE,
    IN_HARNESS,
    IN_PREFETCH,
    IN_REFRESH,
    IN_TEMPLATE,
    INTERNAL,
    LAZY_DEFERRED,
    LAZY_FORWARD,
    LAZY_GENERIC_FK,
    LAZY_REVERSE_ONE,
    QS_EVAL,
    QS_OPERATIONS,
    THIRD_PARTY,
    USER,
    WALK_END,
    WALK_STOP,
)
from .relations import RelationFinder, template_name

_DESCRIPTOR_KINDS = (LAZY_FORWARD, LAZY_REVERSE_ONE, LAZY_DEFERRED, LAZY_GENERIC_FK)
# How far past the call site the extended walk looks (templates, cascades), in frames.
EXTENDED_WALK_LIMIT = 120


def _module_dir(name: str) -> str | None:
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(path)) + os.sep if path else None


class FrameClassifier:
    """Says, per code object, whether a frame is the test's own code or plumbing around it."""

    def __init__(self, catalog: Catalog, rootdir: str | None = None) -> None:
        self.catalog = catalog
        internal = [
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
        ]
        for name in ("django", "_pytest", "pytest", "pluggy", "asgiref", "pytest_django",
                     "pytest_asyncio", "xdist", "psycopg", "psycopg_pool", "execnet"):
            found = _module_dir(name)
            if found:
                internal.append(found)
        paths = sysconfig.get_paths()
        self._stdlib = tuple(
            os.path.abspath(p) + os.sep for p in {paths["stdlib"], paths["platstdlib"]}
        )
        self._internal = tuple(internal)
        self._django = _module_dir("django") or "\0"
        self._pluggy = _module_dir("pluggy") or "\0"
        self._pytest_django = _module_dir("pytest_django") or "\0"
        self._rootdir = os.path.abspath(rootdir) + os.sep if rootdir else None
        # Keyed by id(code): hashing a code object re-hashes its constants on every lookup,
        # an id is free. `_pinned` keeps each code alive so its id is never reused.
        self.kinds: dict[int, int] = {}
        # id(code) -> {instruction offset -> index into catalog.sites}
        self.site_index: dict[int, dict[int, int]] = {}
        self._pinned: list[CodeType] = []
        # context resolution: the relations lazy loads follow, contexts interned by value
        self.relations = RelationFinder()
        # (relation, operation, bypassed_prefetch, template, template_via, template_function,
        # suppressed) -> index into catalog.contexts
        self._context_index: dict[tuple[Any, ...], int] = {_context_key(NO_CONTEXT): 0}

    def classify(self, code: CodeType) -> int:
        kind = self._classify(code)
        self._pinned.append(code)
        self.kinds[id(code)] = kind
        return kind

    def _classify(self, code: CodeType) -> int:
        filename = code.co_filename
        if filename.startswith("<"):
            # <frozen ...>, <string>: never the user's own line
            return INTERNAL
        filename = os.path.abspath(filename)
        if filename.startswith(self._django):
            return self._django_kind(filename, code)
        if filename.startswith(self._internal):
            if code.co_name == "pytest_pyfunc_call":
                return WALK_END
            if code.co_name == "_multicall" and filename.startswith(self._pluggy):
                return WALK_STOP
            if filename.startswith(self._pytest_django):
                return DB_FIXTURE
            return INTERNAL
        if any(os.sep + d + os.sep in filename for d in ("site-packages", "dist-packages")):
            # a project installed into the venv still beats stdlib plumbing as a fallback
            if self._rootdir and filename.startswith(self._rootdir) and ".venv" not in filename:
                return USER
            return THIRD_PARTY
        if filename.startswith(self._stdlib):
            return INTERNAL
        return USER

    def _django_kind(self, filename: str, code: CodeType) -> int:
        qualname = getattr(code, "co_qualname", code.co_name)
        name = code.co_name
        relative = filename[len(self._django):].replace(os.sep, "/")
        if relative == "db/models/fields/related_descriptors.py":
            if qualname == "ForwardManyToOneDescriptor.__get__":
                return LAZY_FORWARD
            if qualname == "ReverseOneToOneDescriptor.__get__":
                return LAZY_REVERSE_ONE
        elif relative == "db/models/query.py":
            if qualname.startswith("QuerySet.") and name in QS_OPERATIONS:
                return QS_EVAL
            if name in ("prefetch_related_objects", "prefetch_one_level"):
                return IN_PREFETCH
        elif relative == "db/models/query_utils.py":
            if qualname == "DeferredAttribute.__get__":
                return LAZY_DEFERRED
        elif relative == "db/models/deletion.py":
            return IN_DELETE
        elif relative == "db/models/base.py":
            if qualname == "Model.refresh_from_db":
                return IN_REFRESH
        elif relative == "contrib/contenttypes/fields.py":
            # the field itself up to Django 5.2, a descriptor object from Django 6.0
            if qualname in ("GenericForeignKey.__get__", "GenericForeignKeyDescriptor.__get__"):
                return LAZY_GENERIC_FK
        elif relative == "template/base.py":
            if qualname == "Template.render":
                return IN_TEMPLATE
        elif relative == "template/context.py" and qualname == "RequestContext.bind_template":
            return IN_CONTEXT_PROCESSORS
        elif relative == "test/testcases.py":
            if name.startswith("_") or name in ("setUpClass", "tearDownClass"):
                return IN_HARNESS
        elif relative in ("core/management/commands/flush.py",
                          "core/management/commands/loaddata.py"):
            return IN_HARNESS
        return INTERNAL

    # -- what Django was doing around a query ------------------------------------------------
    def resolve_context(self, marks: list[FrameType] | None, user: FrameType | None,
                        watch_templates: bool) -> int:
        """Index into catalog.contexts for a query whose walk met `marks` (innermost first)."""
        return self.resolve(marks, user, watch_templates)[0]

    def resolve(self, marks: list[FrameType] | None, user: FrameType | None,
                watch_templates: bool) -> tuple[int, int]:
        """(context index, load group of the instance whose relation loaded) for a query.

        Runs only for queries that passed ORM or template frames, never for plain cursor SQL.
        When a relation is found (or templates are watched) the walk goes on past the call
        site, because a cascade delete or a template render can sit further out.
        """
        kinds = self.kinds
        descriptor = qs_frame = None
        vetoes: set[int] = set()
        template_frame = None
        processors = False
        user_seen_before_template = False
        for frame in marks or ():
            kind = kinds[id(frame.f_code)]
            if kind in _DESCRIPTOR_KINDS:
                if descriptor is None:
                    descriptor = frame
            elif kind == QS_EVAL:
                if qs_frame is None:
                    qs_frame = frame
            elif kind == IN_TEMPLATE:
                if template_frame is None:
                    template_frame = frame
            elif kind == IN_CONTEXT_PROCESSORS:
                processors = True
            else:
                vetoes.add(kind)
        relation = None
        operation = "fetch"
        bypassed = False
        instance = None
        if descriptor is not None:
            relation = self.relations.of_descriptor(descriptor, kinds[id(descriptor.f_code)])
            instance = descriptor.f_locals.get("instance")
        elif qs_frame is not None and IN_REFRESH not in vetoes:
            relation, bypassed = self.relations.of_manager(qs_frame)
            if (relation is None and not vetoes and template_frame is None
                    and not watch_templates):
                # most ORM queries: a queryset of no related manager, nothing around it
                return 0, 0
            if relation is not None:
                hints = getattr(qs_frame.f_locals.get("self"), "_hints", None)
                instance = hints.get("instance") if hints else None
            operation = QS_OPERATIONS.get(qs_frame.f_code.co_name, "fetch")
        if (relation is not None or watch_templates) and user is not None:
            # the rest of the stack: a cascade, a prefetch or a template further out
            outer: FrameType | None = user.f_back
            depth = 0
            while outer is not None and depth < EXTENDED_WALK_LIMIT:
                found_kind = kinds.get(id(outer.f_code))
                kind = self.classify(outer.f_code) if found_kind is None else found_kind
                if kind == WALK_END:
                    break
                if kind in (IN_DELETE, IN_PREFETCH):
                    vetoes.add(kind)
                elif kind == IN_CONTEXT_PROCESSORS:
                    processors = True
                elif kind == IN_TEMPLATE and template_frame is None:
                    template_frame = outer
                    user_seen_before_template = True
                    if not watch_templates:
                        break
                outer = outer.f_back
                depth += 1
            del outer
        suppressed = None
        for kind, label in ((IN_HARNESS, "harness"), (IN_DELETE, "delete"),
                            (IN_PREFETCH, "prefetch"), (IN_REFRESH, "refresh")):
            if kind in vetoes:
                suppressed = label
                break
        if suppressed == "refresh" and descriptor is not None:
            suppressed = None  # a deferred field loads through refresh_from_db: still lazy
        template = via = function = None
        if template_frame is not None:
            template = template_name(template_frame)
            if processors:
                via = "context-processor"
            elif relation is not None and not user_seen_before_template:
                via = "variable"
            elif user_seen_before_template:
                via = "tag"
            else:
                via = "queryset"
            if via in ("context-processor", "tag") and user is not None:
                function = user.f_code.co_name
        if relation is None and template is None and suppressed is None:
            return 0, 0
        load = 0
        if relation is not None and instance is not None:
            load = getattr(getattr(instance, "_state", None), "dbguard_load", 0)
        # interned by its fields as a tuple (hashing a frozen dataclass goes through Python);
        # the lock only for a first sighting, as the tap reads the other tables
        key = (relation, operation, bypassed, template, via, function, suppressed)
        found = self._context_index.get(key)
        if found is None:
            with self.catalog.lock:
                found = self._context_index.get(key)
                if found is None:
                    found = self.catalog.add(self.catalog.contexts, QueryContext(
                        relation=relation, operation=operation, bypassed_prefetch=bypassed,
                        template=template, template_via=via, template_function=function,
                        suppressed=suppressed))
                    self._context_index[key] = found
        return found, load

    def add_site(self, frame: FrameType) -> int:
        """Index of the call site at `frame`'s current instruction, added on first sight."""
        code = frame.f_code
        with self.catalog.lock:
            by_offset = self.site_index.setdefault(id(code), {})
            found = by_offset.get(frame.f_lasti)
            if found is None:
                site = CallSite(self.display_path(code.co_filename), frame.f_lineno or 0,
                                code.co_name)
                found = self.catalog.add(self.catalog.sites, site)
                by_offset[frame.f_lasti] = found
        return found

    def display_path(self, filename: str) -> str:
        absolute = os.path.abspath(filename)
        if self._rootdir and absolute.startswith(self._rootdir):
            return absolute[len(self._rootdir):].replace(os.sep, "/")
        try:
            relative = os.path.relpath(absolute)
        except ValueError:
            return absolute
        return absolute if relative.startswith("..") else relative.replace(os.sep, "/")


def find_user_site(classifier: FrameClassifier, frame: FrameType | None) -> int:
    """Walk outwards from `frame` to the first user frame (else the first third-party one) and
    return its site index; a known site is found without the catalog lock.

    The database tap inlines this loop for speed, and notes what Django was doing around the
    query on the way; keep the two in step.
    """
    kinds = classifier.kinds
    fallback: FrameType | None = None
    while frame is not None:
        kind = kinds.get(id(frame.f_code))
        if kind is None:
            kind = classifier.classify(frame.f_code)
        if kind == USER:
            break
        if kind == THIRD_PARTY:
            if fallback is None:
                fallback = frame
        elif kind == WALK_STOP:
            frame = None
            break
        frame = frame.f_back
    if frame is None:
        frame = fallback
        if frame is None:
            return NO_SITE
    by_offset = classifier.site_index.get(id(frame.f_code))
    site = by_offset.get(frame.f_lasti) if by_offset is not None else None
    return site if site is not None else classifier.add_site(frame)


def _context_key(context: QueryContext) -> tuple[Any, ...]:
    return (context.relation, context.operation, context.bypassed_prefetch, context.template,
            context.template_via, context.template_function, context.suppressed)
