"""`pool-exhausted`: a connection pool ran dry, or the server or the test hit a connection limit."""

from __future__ import annotations

from collections.abc import Iterable

from ..events import Finding, TestRecord
from ..facts import PSYCOPG, PsycopgFacts
from ..text import plural
from .lifecycle import LIFECYCLE_PROBES, NO_RAW
from .registry import RuleOption, TestContext, rule


@rule("pool-exhausted", "fail", "connection pool or server connection limit reached",
      probes=LIFECYCLE_PROBES,
      options=(RuleOption("max_connections", None, "--dbguard-max-connections"),))
def check_pool_exhausted(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    raw: PsycopgFacts = record.facts.get(PSYCOPG) or NO_RAW
    limit = context.options.get("max_connections")
    if not (raw.timeouts or raw.refused) and (limit is None
                                              or record.peak_connections <= limit):
        return ()
    findings = []
    for timeout in raw.timeouts:
        wait = f" after {timeout.timeout:g} s" if timeout.timeout is not None else ""
        size = (f" with all {plural(timeout.max_size, 'connection', 'connections')} "
                f"checked out" if timeout.max_size else "")
        lines = [f"checked out at {site} and not returned by then"
                 for site in timeout.checked_out_here]
        findings.append(Finding(
            rule="pool-exhausted", nodeid=record.nodeid, phase=timeout.phase,
            message=f"pool '{timeout.pool}' was exhausted: getconn() timed out{wait}{size}, "
                    f"at {timeout.site or 'an unknown place'}",
            hint="return every connection as soon as the work is done (`with pool.connection() "
                 "as conn:`), and size the pool for the concurrency the code really has",
            evidence={"lines": lines},
        ))
    for refused in raw.refused:
        findings.append(Finding(
            rule="pool-exhausted", nodeid=record.nodeid, phase=refused.phase,
            message=f"PostgreSQL refused a connection with {refused.sqlstate} (too many "
                    f"connections) at {refused.site or 'an unknown place'}: "
                    f"{refused.message}",
            hint="close connections threads and raw clients no longer need, or put a pool "
                 "(or PgBouncer) in front of PostgreSQL; max_connections is a hard limit",
            evidence={"lines": []},
        ))
    if limit is not None and record.peak_connections > limit:
        lines = list(record.facts.get("peak_connections", ()))
        findings.append(Finding(
            rule="pool-exhausted", nodeid=record.nodeid, phase="call",
            message=f"{record.peak_connections} connections were open at once, more than "
                    f"--dbguard-max-connections {limit}; at the peak:",
            hint="bound the concurrency that opens connections (fewer worker threads, a "
                 "shared pool) and close each thread's connection when its work is done",
            evidence={"lines": lines, "peak": record.peak_connections, "limit": limit},
        ))
    return findings
