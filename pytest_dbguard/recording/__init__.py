"""Turning live database activity into records; the probes a rule can ask for are named here."""

# What recording a rule reads; assembly installs a probe only if an active rule needs it.
PROBE_PARAM_KEYS = "param-keys"  # a key of each query's parameters
PROBE_TEMPLATES = "templates"  # whether a template was rendering
PROBE_EXPLAIN = "explain"  # PostgreSQL plans of each query shape
PROBE_LIFECYCLE = "lifecycle"  # transaction state, Django connections, caught errors
PROBE_PSYCOPG = "psycopg"  # raw psycopg connections and pool checkouts
PROBE_CENSUS = "census"  # the server's view of the test's backends
PROBE_COMMITS = "commits"  # commits and rollbacks of Django connections, the test's own ones
PROBE_LOCKS = "locks"  # PostgreSQL lock waits while a test has several connections open
PROBE_LOAD_GROUPS = "load-groups"  # which multi-row query loaded each model instance
PROBE_BODY_UNITS = "body-units"  # each top-level call of the test body is its own unit of work
PROBE_EAGER_LOADS = "eager-loads"  # select_related / prefetch_related paths, and their reads
