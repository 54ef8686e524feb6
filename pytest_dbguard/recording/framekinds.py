"""Frame kinds: what a frame is to dbguard, decided once per code object by FrameClassifier."""

from __future__ import annotations

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
# pytest-django's own code. Its db fixtures call the harness (_pre_setup, _post_teardown), and
# further out than such a fixture there is only pytest running fixtures under a hook or tearing
# them down, never code that ran a query: the tap's walk ends at a harness frame it called
# instead of going on through ~30 of pytest's frames to WALK_STOP. Below MARK: every other walk
# treats it as an internal frame.
DB_FIXTURE = -2
# pluggy calling a hook: everything further out is pytest's own loop (and plugins wrapping it),
# never the code that ran a query, so the tap's walk stops here instead of at the bottom of the
# stack (a query from pytest-django's harness has no user frame at all). Above MARK so that the
# tap tests for it only on its rare branch for marked frames.
WALK_STOP = 99

# The QuerySet methods that run its query (QS_EVAL frames), and what each asks the database.
QS_OPERATIONS = {"_fetch_all": "fetch", "_iterator": "fetch", "count": "count",
                 "exists": "exists", "aggregate": "count", "contains": "exists"}
