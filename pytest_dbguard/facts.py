"""Typed facts that probes and the session hand to rules next to the query rows.

`TestRecord.facts` maps a probe's name to one of these. They are frozen and hold plain values
only, so a record stays safe to keep after the test and to build by hand in unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from .events import CallSite


@dataclass(frozen=True, slots=True)
class ServerBackend:
    """One backend of the test databases as pg_stat_activity listed it after a phase."""

    pid: int
    database: str
    state: str  # "idle", "idle in transaction", ... or "unknown"
    application_name: str = ""
    known: bool = False  # dbguard can name the connection that owns it


@dataclass(frozen=True, slots=True)
class CensusFacts:
    """The server's view after teardown (PostgreSQL census probe)."""

    backends: tuple[ServerBackend, ...] = ()


@dataclass(frozen=True, slots=True)
class CallError:
    """What the (unstressed) test body raised: the deadlock rule asks whether 40P01 propagated."""

    type: str
    sqlstate: str | None = None


@dataclass(frozen=True, slots=True)
class QueryTimeoutFacts:
    """The query timeout applied to the test's call phase."""

    ms: int
    using: tuple[str, ...] | None = None


# The names the facts above are kept under in TestRecord.facts.
CENSUS = "census"
CALL_ERROR = "call_error"
QUERY_TIMEOUT = "query_timeout"


@dataclass(frozen=True, slots=True)
class RawConnection:
    """A psycopg connection the test opened outside Django (raw, or a pool's own)."""

    kind: str  # "psycopg" or "pool"
    thread: str
    phase: str
    pid: int | None
    site: str | None
    open: bool
    driver: str | None = None  # the driver's transaction status while open


@dataclass(frozen=True, slots=True)
class PoolCheckout:
    """A connection taken from a psycopg-pool pool during the test."""

    pool: str
    phase: str
    site: str | None
    thread: str
    pid: int | None
    returned: bool
    open: bool


@dataclass(frozen=True, slots=True)
class PoolState:
    """A psycopg-pool pool the test created."""

    name: str
    phase: str
    site: str | None
    max_size: int | None
    open: bool


@dataclass(frozen=True, slots=True)
class PoolTimeout:
    """getconn() gave up: the pool was exhausted."""

    pool: str
    max_size: int | None
    timeout: float | None
    site: str | None
    phase: str
    thread: str
    checked_out_here: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RefusedConnection:
    """The server refused a connection (too many connections)."""

    phase: str
    site: str | None
    thread: str
    sqlstate: str
    message: str


@dataclass(frozen=True, slots=True)
class RawStatement:
    """Statements of one text, site and thread a raw psycopg connection ran in one phase."""

    phase: str
    sql: str
    site: str | None
    thread: str
    prepared: bool  # execute(..., prepare=True): a server-side prepared statement
    count: int = 1


@dataclass(frozen=True, slots=True)
class RawWrite:
    """Writes of one shape a raw psycopg connection committed (escaped-write reads them)."""

    phase: str
    sql: str  # the fingerprint
    site: str | None
    thread: str
    connection: str  # how the report names it: "a raw psycopg connection", a pool's checkout
    database: str
    how: str  # "committed at once (autocommit)", "committed by commit()", ...
    count: int = 1


@dataclass(frozen=True, slots=True)
class PsycopgFacts:
    """What the psycopg probe saw; connections, checkouts and pools only after teardown."""

    connections: tuple[RawConnection, ...] = ()
    checkouts: tuple[PoolCheckout, ...] = ()
    pools: tuple[PoolState, ...] = ()
    timeouts: tuple[PoolTimeout, ...] = ()
    refused: tuple[RefusedConnection, ...] = ()
    statements: tuple[RawStatement, ...] = ()
    writes: tuple[RawWrite, ...] = ()  # committed on raw connections, set-up and body


PSYCOPG = "psycopg"


@dataclass(frozen=True, slots=True)
class CommitFacts:
    """Which connections are the test's own, which of them roll back, and every commit.

    `test_conns` are catalog indexes (`ROW_CONN`) of the test thread's Django connections;
    `rolled_back` the aliases whose test connection was inside atomic when the body began
    (pytest-django's `db` fixture, Django's TestCase); `events` are (phase, position in that
    phase's rows, connection index, "commit" or "rollback") in the order they happened.
    """

    test_conns: tuple[int, ...] = ()
    rolled_back: tuple[str, ...] = ()
    events: tuple[tuple[str, int, int, str], ...] = ()
    # the database names of the `rolled_back` aliases (raw connections are matched by name)
    rolled_back_databases: tuple[str, ...] = ()


COMMITS = "commits"


@dataclass(frozen=True, slots=True)
class EagerLoad:
    """One select_related field or prefetch_related lookup of the test body's querysets.

    Evaluations of one queryset line that eager-loaded the same path are one entry: `used` is
    true when the related objects of any of them were read.
    """

    model: str  # the model the queryset loads ("Book")
    holder: str  # the model the path's last level hangs from ("Book" for Author books__tags)
    method: str  # "select_related" or "prefetch_related"
    path: str  # the field or lookup, "author", "reviews__user"
    to_attr: str | None  # Prefetch(to_attr=...) of the path's last level
    site: CallSite | None  # where the queryset asked for the path (else where it was evaluated)
    evaluations: int  # how many times a queryset from that line loaded it
    rows: int  # instances the path hung from, over those evaluations
    loaded: int  # related objects the path loaded (rows with a related object for select)
    used: bool
    unit: str = ""  # the request it was first evaluated in; "" for the test body
    forward: bool = False  # a foreign key (or one-to-one) of the holder: its key is on the row


EAGER_LOADS = "eager_loads"


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """What one Django connection object said about its transaction, read without SQL."""

    alias: str
    vendor: str
    open: bool
    depth: int = 0  # atomic blocks entered
    needs_rollback: bool = False
    autocommit: bool = True
    driver: str | None = None  # the driver's transaction status while open
    pid: int | None = None


@dataclass(frozen=True, slots=True)
class ThreadConnection:
    """A Django connection another thread opened during the test, as it was after teardown."""

    alias: str
    vendor: str
    thread: str
    thread_alive: bool
    phase: str
    pid: int | None
    site: str | None
    via: str | None  # "sync_to_async": asgiref's executor thread connected
    open: bool
    state: ConnectionState | None  # while open


@dataclass(frozen=True, slots=True)
class BlockExit:
    """How the atomic block a database error was caught in ended (the error never left it)."""

    block_exit: str  # the project line whose `with atomic()` ended the block
    outcome: str


@dataclass(frozen=True, slots=True)
class CaughtDbError:
    """A failed query's exception during the test body, and who caught it."""

    exc_id: int
    type: str
    message: str
    sqlstate: str | None
    sql: str
    site: str | None
    alias: str
    thread_ident: int | None
    thread: str
    caught_in: str  # the function that caught it
    caught_at: str | None
    caught_by: str  # "test", "code" or "internal"
    in_block: BlockExit | None = None  # caught inside the very atomic block it broke


@dataclass(frozen=True, slots=True)
class LockHolder:
    """A backend another of the test's connections waited on (lock sampler, outside stress)."""

    pid: int
    state: str | None  # its pg_stat_activity state, "idle in transaction" typically
    sql: str  # fingerprint of its last statement; "" when not known
    thread: str | None = None  # the test's thread whose connection it is
    connection: str | None = None  # how a raw psycopg connection or pool checkout is named


@dataclass(frozen=True, slots=True)
class LockWait:
    """One statement of the test body seen waiting for a lock, with the backends it waited on."""

    pid: int
    sql: str  # fingerprint
    wait_ms: float  # the longest wait a sample saw
    blockers: tuple[LockHolder, ...]
    thread: str | None = None
    connection: str | None = None


LOCK_WAITS = "lock_waits"  # list[LockWait], longest first
