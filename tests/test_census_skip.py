"""The PostgreSQL census runs only when a test could have left a backend the hooks did not see."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from pytest_dbguard.recording.census import has_children, open_sockets
from pytest_dbguard.rules.lifecycle import HINT_UNHOOKED
from tests.lifecycle_support import run_json

SUBPROCESS_TESTS = """
import os
import subprocess
import sys

import pytest
from django.db import connection

CONNECT = '''
import sys, time, psycopg
conn = psycopg.connect(sys.argv[1])
print("connected", flush=True)
if sys.argv[2] == "stay":
    time.sleep(60)
'''

KEEP = []


def dsn():
    base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    return f"{base}/{connection.settings_dict['NAME']}"


def start(mode):
    child = subprocess.Popen([sys.executable, "-c", CONNECT, dsn(), mode],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "connected\\n"
    return child


@pytest.mark.django_db
def test_plain_query():
    assert connection.cursor() is not None


@pytest.mark.django_db
def test_subprocess_keeps_a_backend():
    KEEP.append(start("stay"))


@pytest.mark.django_db
def test_after_the_leak():
    assert connection.cursor() is not None


@pytest.mark.django_db
def test_subprocess_that_exits():
    child = start("exit")
    child.wait()
    child.stdout.close()


def test_teardown_stops_it():
    for child in KEEP:
        child.kill()
        child.wait()
        child.stdout.close()
"""


@pytest.mark.parametrize("backend", ["postgres"])
def test_census_sees_a_backend_a_subprocess_keeps(djproject, backend):
    # The subprocess's backend is invisible to the hooks and opens no socket in pytest's
    # process: the live child is what makes the census run.
    djproject.write_test(SUBPROCESS_TESTS)
    result, findings = run_json(djproject)
    result.assert_outcomes(passed=5, errors=1)
    assert findings["test_subprocess_keeps_a_backend"] == [{
        "rule": "connection-leak",
        "phase": "teardown",
        "message": "1 connection opened by this test is still open after teardown",
        "lines": ["PostgreSQL backend pid N on database TEST_DB (idle) connected during the "
                  "test and is still there; no driver dbguard hooks opened it"],
        "hint": HINT_UNHOOKED,
    }]
    for near_miss in ("test_plain_query", "test_after_the_leak", "test_subprocess_that_exits",
                      "test_teardown_stops_it"):
        assert findings[near_miss] == [], near_miss


def test_open_sockets_follows_this_process():
    before = open_sockets()
    assert before is not None  # the suite runs on Linux
    sock = socket.socket()
    try:
        during = open_sockets()
        assert during is not None
        assert len(during - before) == 1
    finally:
        sock.close()
    assert open_sockets() == before


def test_has_children_sees_a_live_child_only():
    assert has_children() is False
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert has_children() is True
    finally:
        child.kill()
        child.wait()
    assert has_children() is False


def test_has_children_leaves_an_exited_child_to_its_owner():
    """An exited child nobody waited for yet still counts, and its status is not taken from
    the code that started it (subprocess's wait must still get the real exit code)."""
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, still unreaped
        assert has_children() is True
        assert has_children() is True
    finally:
        assert child.wait() == 7
    assert has_children() is False


def test_has_children_sees_a_child_another_thread_started():
    started: list[subprocess.Popen[bytes]] = []
    thread = threading.Thread(target=lambda: started.append(subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"])))
    thread.start()
    thread.join()
    try:
        assert has_children() is True
    finally:
        started[0].kill()
        started[0].wait()
    assert has_children() is False
