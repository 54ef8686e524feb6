"""Defaults of the rule options that have a command-line flag.

The rules declare their options with these values (rules/nplusone.py, shape.py, lockwait.py),
and the flags' help text quotes them. They live in this import-free module so that adding the
options, which every pytest run of a project with dbguard installed does, imports no rule.
"""

NPLUSONE_THRESHOLD = 3  # --dbguard-nplusone-threshold
SLOW_MS = 100.0  # --dbguard-slow-ms
LOCK_WAIT_MS = 200  # --dbguard-lock-wait-ms
