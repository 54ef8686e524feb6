"""Finds the user frame behind a query cheaply: code objects are classified once and cached."""

from __future__ import annotations

import os
import sys
import sysconfig
from types import CodeType, FrameType

from ..events import NO_SITE, CallSite, Catalog

# Frame kinds. Anything >= LAZY_BASE is an internal frame that also marks lazy relation access.
USER = 0
INTERNAL = 1
THIRD_PARTY = 2
LAZY_FORWARD = 3  # book.author: forward FK / one-to-one descriptor
LAZY_REVERSE_ONE = 4  # author.profile: reverse one-to-one descriptor
LAZY_MANAGER = 5  # author.books.all(): reverse FK / M2M / generic related manager

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
        if filename.endswith("related_descriptors.py"):
            qualname = getattr(code, "co_qualname", code.co_name)
            if qualname.startswith("ForwardManyToOneDescriptor.") and code.co_name == "__get__":
                return LAZY_FORWARD
            if qualname.startswith("ReverseOneToOneDescriptor.") and code.co_name == "__get__":
                return LAZY_REVERSE_ONE
            if code.co_name in ("get_queryset", "_apply_rel_filters", "__init__"):
                return INTERNAL
        return INTERNAL

    def add_site(self, frame: FrameType) -> int:
        """Index of the call site at `frame`'s current instruction, added on first sight."""
        code = frame.f_code
        by_offset = self.site_index.setdefault(id(code), {})
        found = by_offset.get(frame.f_lasti)
        if found is None:
            sites = self.catalog.sites
            found = len(sites)
            sites.append(CallSite(self.display_path(code.co_filename), frame.f_lineno or 0,
                                  code.co_name))
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


def find_user_frame(classifier: FrameClassifier, frame: FrameType | None) -> tuple[int, int]:
    """Walk outwards from `frame` to the first user frame: its site index and any lazy kind.

    The database tap inlines this loop for speed; keep the two in step.
    """
    kinds = classifier.kinds
    fallback: FrameType | None = None
    lazy = 0
    while frame is not None:
        kind = kinds.get(id(frame.f_code))
        if kind is None:
            kind = classifier.classify(frame.f_code)
        if kind == USER:
            return classifier.add_site(frame), lazy
        if kind == THIRD_PARTY:
            if fallback is None:
                fallback = frame
        elif kind > THIRD_PARTY and not lazy:
            lazy = kind
        frame = frame.f_back
    if fallback is not None:
        return classifier.add_site(fallback), lazy
    return NO_SITE, lazy
