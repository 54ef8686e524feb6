"""The model relation behind a lazy load, read from Django's descriptor and manager frames.

Models are introspected once per descriptor or (model, related model, foreign key) and the
answer cached. template_name() names the template a render frame belongs to.
"""

from __future__ import annotations

from types import FrameType
from typing import Any

from ..events import Relation
from .framekinds import LAZY_DEFERRED, LAZY_FORWARD, LAZY_GENERIC_FK, LAZY_REVERSE_ONE


class RelationFinder:
    """The relation each lazy-load frame follows, cached per descriptor and per manager key."""

    def __init__(self) -> None:
        # id(descriptor) or (source model, target model, foreign key) -> Relation
        self._relations: dict[Any, Relation | None] = {}
        # the descriptors and keys cached by id stay alive, so that no id is reused
        self._pinned: list[Any] = []

    def of_descriptor(self, frame: FrameType, kind: int) -> Relation | None:
        """The relation a descriptor's __get__ (a frame of one of the LAZY_* kinds) loads."""
        local = frame.f_locals
        descriptor = local.get("self")
        instance = local.get("instance")
        if descriptor is None or instance is None:
            return None
        key = id(descriptor)
        if key in self._relations:
            return self._relations[key]
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
        self._pinned.append(descriptor)
        self._relations[key] = relation
        return relation

    def of_manager(self, frame: FrameType) -> tuple[Relation | None, bool]:
        """The related manager behind a queryset being evaluated (a QS_EVAL frame), if it came
        from one, and whether the call bypassed the relation's prefetched objects.

        Reverse-FK and many-to-many managers give their querysets the owning instance as a
        router hint (`_add_hints(instance=...)`); reverse-FK ones also set
        `_known_related_objects` naming the foreign key. Prefetch querysets carry the hint
        too, which is why prefetch frames veto (see FrameClassifier.resolve).
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
            self._pinned.append(key)
        bypassed = False
        if relation is not None:
            cache = getattr(instance, "_prefetched_objects_cache", None)
            if cache:
                names = {relation.field, *(name for name, _ in relation.candidates)}
                bypassed = any(name in cache for name in names)
        return relation, bypassed


def template_name(frame: FrameType) -> str:
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
