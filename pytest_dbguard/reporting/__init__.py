"""Report writers: each format is one small module over plain per-test dicts."""
