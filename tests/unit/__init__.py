"""Fast tests: rules, policy, registry, reports, config in-process; no database or subprocess."""
