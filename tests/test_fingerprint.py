"""SQL fingerprints: one query shape, one fingerprint (pure functions, no database)."""

from __future__ import annotations

import pytest

from pytest_dbguard.events import Catalog
from pytest_dbguard.recording.fingerprint import Fingerprinter, make_shape, short_sql


@pytest.mark.parametrize(("sql", "expected"), [
    ('SELECT "a"."id" FROM "a" WHERE "a"."id" IN (%s, %s, %s)',
     'SELECT "a"."id" FROM "a" WHERE "a"."id" IN (...)'),
    ("SELECT * FROM t WHERE name = 'O''Brien' AND n = 42 AND x = 1.5",
     "SELECT * FROM t WHERE name = %s AND n = %s AND x = %s"),
    ("select count(*) from t -- trailing comment\n where a = ?",
     "SELECT count(*) FROM t WHERE a = %s"),
    ('INSERT INTO "t" ("a", "b") VALUES (%s, %s), (%s, %s), (%s, %s)',
     'INSERT INTO "t" ("a", "b") VALUES (...)'),
    ('SAVEPOINT "s140_x1"', "SAVEPOINT <name>"),
    ('RELEASE SAVEPOINT "s140_x9"', "RELEASE SAVEPOINT <name>"),
    ("SELECT * FROM t1 WHERE t1.c2 = %(name)s;", "SELECT * FROM t1 WHERE t1.c2 = %s"),
])
def test_normalisation(sql, expected):
    assert make_shape(sql).fingerprint == expected


def test_same_shape_same_id_and_flags():
    one = make_shape("SELECT * FROM t WHERE id IN (1, 2)")
    two = make_shape("SELECT * FROM t WHERE id IN (%s, %s, %s, %s)")
    assert one.fingerprint_id == two.fingerprint_id
    assert len(one.fingerprint_id) == 12
    assert make_shape("BEGIN").is_transaction_control
    assert not make_shape("SELECT 1").is_transaction_control
    assert make_shape("SELECT * FROM t FOR UPDATE").is_write
    assert make_shape("UPDATE t SET a = 1").is_write
    assert not make_shape("SELECT * FROM t").is_write


def test_fingerprinter_deduplicates_and_bounds_caches():
    catalog = Catalog()
    fingerprinter = Fingerprinter(catalog, max_entries=10)
    indexes = {fingerprinter.index_of(f"SELECT * FROM t WHERE id = {n}") for n in range(100)}
    assert indexes == {0}
    assert len(catalog.shapes) == 1
    assert len(fingerprinter.by_sql) <= 10
    assert fingerprinter.index_of("SELECT * FROM u") == 1


def test_placeholder_lists_of_any_length_share_one_lexer_pass(monkeypatch):
    # a prefetch's IN list and a bulk_create's VALUES groups grow with the rows: one lexer pass
    # for every length, not one per length
    from pytest_dbguard.recording import fingerprint

    lexed: list[str] = []
    real = fingerprint.make_shape
    monkeypatch.setattr(fingerprint, "make_shape", lambda sql: lexed.append(sql) or real(sql))
    fingerprinter = Fingerprinter(Catalog())
    in_lists = {fingerprinter.index_of(
        'SELECT "b"."id" FROM "b" WHERE "b"."author_id" IN (' + ", ".join(["%s"] * n) + ")")
        for n in range(1, 41)}
    values = {fingerprinter.index_of(
        'INSERT INTO "b" ("t", "n") VALUES ' + ", ".join(["(%s, %s)"] * n) + ' RETURNING "b"."id"')
        for n in range(1, 11)}
    assert (in_lists, values) == ({0}, {1})
    assert len(lexed) == 2

    # near misses: a function's arguments are not a list, and a group with an expression stays
    lexed.clear()
    calls = [fingerprinter.index_of(sql) for sql in (
        "SELECT COALESCE(%s) FROM t", "SELECT COALESCE(%s, %s) FROM t",
        "INSERT INTO t (a, b) VALUES (%s, NOW())", "INSERT INTO t (a, b) VALUES (%s, %s)")]
    assert calls == [2, 3, 4, 5]
    assert len(lexed) == 4
    assert make_shape("SELECT COALESCE(%s) FROM t").fingerprint_id != make_shape(
        "SELECT COALESCE(%s, %s) FROM t").fingerprint_id


def test_short_sql_elides_select_list():
    assert short_sql('SELECT "a"."id", "a"."name" FROM "a" WHERE "a"."id" = %s') == (
        'SELECT ... FROM "a" WHERE "a"."id" = %s')
    assert short_sql("SELECT DISTINCT a, b FROM t") == "SELECT DISTINCT ... FROM t"
    assert short_sql("SELECT x FROM t " + "AND y " * 100, width=40).endswith("...")
    assert len(short_sql("SELECT x FROM t " + "AND y " * 100, width=40)) == 40
