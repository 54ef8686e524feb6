"""Finds the user frame behind a query cheaply: code objects are classified once and cached."""

from __future__ import annotations

import os
import sys
import sysconfig
from types import CodeType, FrameType
from typing import Any

from ..events import NO_CONTEXT, NO_SITE, CallSite, Catalog, QueryContext, Relation

# Frame kinds. USER ends the walk to the call site; kinds >= MARK are internal frames the tap
# keeps (rarely: ORM and template frames) so that resolve_context() can say what Django was
# doing around the query.
USER = 0
INTERNAL = 1
THIRD_PARTY = 2
MARK = 3
LAZY_FORWARD = 3  # book.author: forward FK / one-to-one descriptor __get__
LAZY_REVERSE_ONE = 4  # author.profile: reverse one-to-one descriptor __get__
QS_EVAL = 5  # a QuerySet evaluating itself; related managers' querysets are told apart by hints
LAZY_DEFERRED = 6  # book.title after only()/defer(): DeferredAttribute.__get__
LAZY_GENERIC_FK = 7  # comment.content_object: GenericForeignKey.__get__
IN_PREFETCH = 8  # prefetch_related machinery
IN_DELETE = 9  # the deletion collector (cascades)
IN_REFRESH = 10  # Model.refresh_from_db
IN_TEMPLATE = 11  # django.template.base.Template.render
IN_CONTEXT_PROCESSORS = 12  # RequestContext.bind_template runs the context processors
# Django's test machinery: the test transaction's savepoints, flush, sequence resets, loaddata
IN_HARNESS = 13
# where the extended walk (templates, cascades) stops: pytest calling the test function. Below
# MARK so that the tap's own walk treats it as any internal frame.
WALK_END = -1

_DESCRIPTOR_KINDS = (LAZY_FORWARD, LAZY_REVERSE_ONE, LAZY_DEFERRED, LAZY_GENERIC_FK)
_QS_OPERATIONS = {"_fetch_all": "fetch", "_iterator": "fetch", "count": "count",
                  "exists": "exists", "aggregate": "count", "contains": "exists"}
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
        self._rootdir = os.path.abspath(rootdir) + os.sep if rootdir else None
        # Keyed by id(code): hashing a code object re-hashes its constants on every lookup,
        # an id is free. `_pinned` keeps each code alive so its id is never reused.
        self.kinds: dict[int, int] = {}
        # id(code) -> {instruction offset -> index into catalog.sites}
        self.site_index: dict[int, dict[int, int]] = {}
        self._pinned: list[CodeType] = []
        # context resolution caches: descriptor / relation keys -> Relation, tuple -> index
        self._relations: dict[Any, Relation | None] = {}
        self._context_index: dict[QueryContext, int] = {NO_CONTEXT: 0}
        self._pinned_objects: list[Any] = []

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
            if qualname.startswith("QuerySet.") and name in _QS_OPERATIONS:
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
            relation = self._descriptor_relation(descriptor)
            instance = descriptor.f_locals.get("instance")
        elif qs_frame is not None and IN_REFRESH not in vetoes:
            relation, bypassed = self._manager_relation(qs_frame)
            if relation is not None:
                hints = getattr(qs_frame.f_locals.get("self"), "_hints", None)
                instance = hints.get("instance") if hints else None
            operation = _QS_OPERATIONS.get(qs_frame.f_code.co_name, "fetch")
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
            template = _template_name(template_frame)
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
        context = QueryContext(relation=relation, operation=operation,
                               bypassed_prefetch=bypassed, template=template,
                               template_via=via, template_function=function,
                               suppressed=suppressed)
        with self.catalog.lock:
            found = self._context_index.get(context)
            if found is None:
                found = self.catalog.add(self.catalog.contexts, context)
                self._context_index[context] = found
        return found, load

    def _descriptor_relation(self, frame: FrameType) -> Relation | None:
        local = frame.f_locals
        descriptor = local.get("self")
        instance = local.get("instance")
        if descriptor is None or instance is None:
            return None
        key = id(descriptor)
        if key in self._relations:
            return self._relations[key]
        kind = self.kinds[id(frame.f_code)]
        relation: Relation | None = None
        try:
            if kind == LAZY_FORWARD:
                field = descriptor.field
                relation = Relation("forward", field.model.__name__, field.name,
                                    field.related_model.__name__, field.model._meta.db_table)
            elif kind == LAZY_REVERSE_ONE:
                related = descriptor.related
                relation = Relation("reverse-one", related.model.__name__,
                                    related.get_accessor_name(), related.related_model.__name__,
                                    related.model._meta.db_table)
            elif kind == LAZY_DEFERRED:
                field = descriptor.field
                relation = Relation("deferred", field.model.__name__, field.attname,
                                    field.model.__name__, field.model._meta.db_table)
            elif kind == LAZY_GENERIC_FK:
                field = getattr(descriptor, "field", descriptor)  # Django 6 wraps the field
                model = field.model
                relation = Relation("generic-fk", model.__name__, field.name, "?",
                                    model._meta.db_table)
        except Exception:
            relation = None
        self._pinned_objects.append(descriptor)
        self._relations[key] = relation
        return relation

    def _manager_relation(self, frame: FrameType) -> tuple[Relation | None, bool]:
        """The related manager behind a queryset being evaluated, if it came from one.

        Reverse-FK and many-to-many managers give their querysets the owning instance as a
        router hint (`_add_hints(instance=...)`); reverse-FK ones also set
        `_known_related_objects` naming the foreign key. Prefetch querysets carry the hint
        too, which is why prefetch frames veto (see resolve_context).
        """
        queryset = frame.f_locals.get("self")
        hints = getattr(queryset, "_hints", None)
        if not hints:
            return None, False
        instance = hints.get("instance")
        if instance is None:
            return None, False
        known = getattr(queryset, "_known_related_objects", None)
        fk = next(iter(known), None) if known else None
        source = type(instance)
        target = getattr(queryset, "model", None)
        key = (source, target, fk)
        if key in self._relations:
            relation = self._relations[key]
        else:
            relation = _manager_relation(source, target, fk)
            self._relations[key] = relation
            self._pinned_objects.append(key)
        bypassed = False
        if relation is not None:
            cache = getattr(instance, "_prefetched_objects_cache", None)
            if cache:
                names = {relation.field, *(name for name, _ in relation.candidates)}
                bypassed = any(name in cache for name in names)
        return relation, bypassed

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


def _template_name(frame: FrameType) -> str:
    template = frame.f_locals.get("self")
    name = getattr(template, "name", None)
    if not name:
        origin = getattr(template, "origin", None)
        name = getattr(origin, "template_name", None) or getattr(origin, "name", None)
    return str(name) if name and name != "<unknown source>" else "<string>"


def _manager_relation(source: type, target: Any, fk: Any) -> Relation | None:
    """The relation of `source` whose manager loads `target` rows (None if there is none)."""
    meta = getattr(source, "_meta", None)
    target_meta = getattr(target, "_meta", None)
    if meta is None or target_meta is None:
        return None
    if fk is not None:
        # reverse FK: the queryset names its foreign key exactly
        remote = fk.remote_field
        return Relation("manager", source.__name__, remote.get_accessor_name(),
                        target.__name__, meta.db_table)
    concrete = target_meta.concrete_model
    found: list[tuple[str, str]] = []
    for field in meta.get_fields():
        if not field.many_to_many or field.related_model is None:
            continue
        related_meta = getattr(field.related_model, "_meta", None)
        if related_meta is None or related_meta.concrete_model is not concrete:
            continue
        if field.auto_created:  # reverse side: ManyToManyRel
            name = field.get_accessor_name()
            through = field.through
        else:
            name = field.name
            through = field.remote_field.through
        table = through._meta.db_table if through is not None else ""
        found.append((name, table))
    if not found:
        return None
    candidates = tuple(found) if len(found) > 1 else ()
    return Relation("manager", source.__name__, found[0][0], target.__name__, meta.db_table,
                    candidates)


def find_user_frame(classifier: FrameClassifier, frame: FrameType | None) -> tuple[int, int]:
    """Walk outwards from `frame` to the first user frame: its site index and context index.

    The database tap inlines this loop for speed; keep the two in step.
    """
    kinds = classifier.kinds
    fallback: FrameType | None = None
    marks: list[FrameType] | None = None
    while frame is not None:
        kind = kinds.get(id(frame.f_code))
        if kind is None:
            kind = classifier.classify(frame.f_code)
        if kind == USER:
            break
        if kind == THIRD_PARTY:
            if fallback is None:
                fallback = frame
        elif kind >= MARK:
            if marks is None:
                marks = [frame]
            else:
                marks.append(frame)
        frame = frame.f_back
    user = frame
    if frame is None:
        frame = fallback
    site = classifier.add_site(frame) if frame is not None else NO_SITE
    context = classifier.resolve_context(marks, user, False) if marks is not None else 0
    return site, context
