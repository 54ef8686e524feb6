"""A real PostgreSQL server for the test suite: found through DBGUARD_TEST_DSN or started here.

How a server is found, in this order:

1. ``DBGUARD_TEST_DSN`` (a libpq URL of a role that may create databases, e.g.
   ``postgresql://dbguard:secret@127.0.0.1:5432/postgres``), when set and reachable.
2. A throwaway cluster shared by every process of the test session, pytest-xdist workers
   included. It lives under ``<tmp>/pytest-dbguard-pg-<uid>/``: the first process that needs it
   runs ``initdb`` + ``pg_ctl start`` (as the ``postgres`` OS user when we are root, since
   PostgreSQL refuses to run as root) while holding a file lock, and records it in
   ``state.json``; later processes reuse it.

Lifetime rules of the shared cluster: ``state.json`` lists the sessions using it (the pid of
each pytest controller process). A session's controller releases it in ``pytest_unconfigure``;
the cluster is stopped and deleted when the last live session releases it. A cluster left by a
session that was killed is reused by the next session and stopped at its end.

The cluster listens on 127.0.0.1 only (no Unix socket), on a free port, with ``fsync=off``,
``max_connections=200`` and ``deadlock_timeout=200ms``; the role ``dbguard`` is a superuser with
a random password.

Command line, for CI scripts that want one server for several pytest runs (tox)::

    python -m tests.pgserver start [--dir DIR]   # prints the DSN on stdout
    python -m tests.pgserver stop  [--dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

DSN_ENV = "DBGUARD_TEST_DSN"
# Set by the controller process of a pytest session; xdist workers inherit it, so every process
# of one session registers the same user in the shared state.
SESSION_ENV = "DBGUARD_TEST_PG_SESSION"
ROLE = "dbguard"
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "deadlock_timeout": "'200ms'",
    "log_min_messages": "warning",
}
START_TIMEOUT_S = 60
LOCK_TIMEOUT_S = 180


class PgUnavailable(RuntimeError):
    """No PostgreSQL server could be found or started; the message says why and what to do."""


@dataclass(frozen=True)
class PgServer:
    """A reachable server and a superuser DSN for it."""

    dsn: str
    source: str  # "env" (DBGUARD_TEST_DSN) or "started" (a throwaway cluster)

    def url_for(self, dbname: str) -> str:
        """The DSN as a ``postgresql://`` URL pointing at another database on this server."""
        return dsn_with_dbname(self.dsn, dbname)


def ci_mode() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def dsn_with_dbname(dsn: str, dbname: str) -> str:
    """``dsn`` (a URL or key=value) as a URL for ``dbname``, the form dj_database_url reads."""
    from psycopg.conninfo import conninfo_to_dict

    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    user = quote(params.pop("user", ""), safe="")
    password = quote(params.pop("password", ""), safe="")
    host = params.pop("host", "127.0.0.1")
    port = params.pop("port", "5432")
    params.pop("dbname", None)
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(params.items()))
    return f"postgresql://{auth}{host}:{port}/{quote(dbname)}" + (f"?{query}" if query else "")


def check_reachable(dsn: str, timeout_s: int = 5) -> str | None:
    """None when ``dsn`` accepts a connection, else the reason (without the password)."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is in the dev extra
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(dsn, connect_timeout=timeout_s, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip()}"
    return None


def find_bindir() -> Path:
    """Directory holding initdb/pg_ctl: $DBGUARD_PG_BINDIR, the newest Debian install, or PATH."""
    explicit = os.environ.get("DBGUARD_PG_BINDIR")
    candidates = [Path(explicit)] if explicit else []

    def version(path: str) -> tuple[int, ...]:
        part = Path(path).parent.parent.name
        return tuple(int(x) for x in part.split(".") if x.isdigit())

    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    candidates += [Path(p).parent for p in debian]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PgUnavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl) were found in /usr/lib/postgresql/*/bin "
        "or on PATH; install them (apt-get install postgresql) or set DBGUARD_TEST_DSN"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """A throwaway PostgreSQL cluster in ``directory`` (data/, server.log, state.json)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data_dir = directory / "data"
        self.log_file = directory / "server.log"
        self.state_file = directory / "state.json"

    # -- running commands as the server's OS user -------------------------------------------

    def _as_server_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        if shutil.which("runuser") is None:
            raise PgUnavailable("running as root but `runuser` is missing; set DBGUARD_TEST_DSN")
        return ["runuser", "-u", "postgres", "--", *argv]

    def _server_user_ids(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            raise PgUnavailable(
                "running as root, and PostgreSQL refuses to run as root, but there is no "
                "`postgres` OS user to run it as; install the postgresql package (it creates the "
                "user) or set DBGUARD_TEST_DSN"
            ) from None
        return entry.pw_uid, entry.pw_gid

    def _run(self, argv: list[str], what: str, timeout: float = 120) -> None:
        proc = subprocess.run(
            self._as_server_user(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.directory,
        )
        if proc.returncode != 0:
            log = (
                self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            )
            raise PgUnavailable(
                f"{what} failed with exit code {proc.returncode}:\n{proc.stdout}{proc.stderr}"
                + (f"\nserver log:\n{log}" if log else "")
            )

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> str:
        """initdb + start on a free port; returns the superuser DSN. Retries on a port race."""
        bindir = find_bindir()
        ids = self._server_user_ids()
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True, mode=0o700)
        password = secrets.token_hex(16)
        pwfile = self.directory / "pwfile"
        pwfile.write_text(password + "\n")
        if ids is not None:
            os.chown(self.directory, *ids)
            os.chown(pwfile, *ids)
        self._run(
            [
                str(bindir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                ROLE,
                "--pwfile",
                str(pwfile),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
                "--no-instructions",
            ],
            "initdb",
        )
        pwfile.unlink()
        base_conf = (self.data_dir / "postgresql.conf").read_text()
        last_error: PgUnavailable | None = None
        for _attempt in range(3):
            port = free_port()
            settings = {**SERVER_SETTINGS, "port": str(port)}
            conf = "\n".join(f"{key} = {value}" for key, value in settings.items())
            (self.data_dir / "postgresql.conf").write_text(
                base_conf + "\n# pytest-dbguard test server\n" + conf + "\n"
            )
            try:
                self._run(
                    [
                        str(bindir / "pg_ctl"),
                        "start",
                        "--pgdata",
                        str(self.data_dir),
                        "--log",
                        str(self.log_file),
                        "--wait",
                        "--timeout",
                        str(START_TIMEOUT_S),
                    ],
                    "pg_ctl start",
                    timeout=START_TIMEOUT_S + 30,
                )
            except PgUnavailable as exc:
                last_error = exc
                continue
            dsn = f"postgresql://{ROLE}:{password}@127.0.0.1:{port}/postgres"
            problem = check_reachable(dsn, timeout_s=10)
            if problem is None:
                return dsn
            self.stop(remove=False)
            last_error = PgUnavailable(f"the server started but refused a connection: {problem}")
        assert last_error is not None
        raise last_error

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        return None

    def stop(self, remove: bool = True) -> None:
        """Stop the server (fast, then by signal) and delete the directory when ``remove``."""
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(PgUnavailable, OSError, subprocess.TimeoutExpired):
                bindir = find_bindir()
                self._run(
                    [str(bindir / "pg_ctl"), "stop", "--pgdata", str(self.data_dir), "-m", "fast"],
                    "pg_ctl stop",
                    timeout=60,
                )
            pid = self.postmaster_pid()
            if pid is not None and _pid_alive(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGQUIT)
                for _ in range(50):
                    if not _pid_alive(pid):
                        break
                    time.sleep(0.1)
                else:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)


# -- a cluster shared by the processes of a session ----------------------------------------------


def _proc_start_time(pid: int) -> str:
    """Kernel start time of ``pid`` (guards against pid reuse); "" where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def current_user_id() -> str:
    """This process as a user of the shared cluster: ``pid:start_time``."""
    return f"{os.getpid()}:{_proc_start_time(os.getpid())}"


def _user_alive(user: str) -> bool:
    pid_text, _, start = user.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    return _pid_alive(pid) and _proc_start_time(pid) == start


def shared_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"pytest-dbguard-pg-{os.getuid()}"


def _lock(directory: Path):  # -> filelock.FileLock
    from filelock import FileLock

    directory.mkdir(parents=True, exist_ok=True)
    # The server's OS user must be able to reach the cluster directory below this one.
    os.chmod(directory, 0o755)
    return FileLock(str(directory / "lock"), timeout=LOCK_TIMEOUT_S)


def _read_state(state_file: Path) -> dict | None:
    try:
        return json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None


def _write_state(state_file: Path, state: dict) -> None:
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.chmod(tmp, 0o600)  # holds the password
    tmp.replace(state_file)


def acquire_shared(user: str, directory: Path | None = None) -> str:
    """DSN of the shared cluster, started if needed, with ``user`` registered as using it."""
    directory = directory or shared_dir()
    state_file = directory / "state.json"
    with _lock(directory):
        state = _read_state(state_file)
        if state and check_reachable(state["dsn"]) is None:
            users = [u for u in state["users"] if _user_alive(u) or u == user]
            if user not in users:
                users.append(user)
            state["users"] = users
            _write_state(state_file, state)
            return str(state["dsn"])
        if state:  # a dead or broken cluster: clear it away before starting afresh
            Cluster(Path(state["cluster_dir"])).stop()
        cluster = Cluster(directory / f"cluster-{secrets.token_hex(4)}")
        try:
            dsn = cluster.start()
        except BaseException:
            cluster.stop()
            raise
        state = {"dsn": dsn, "cluster_dir": str(cluster.directory), "users": [user]}
        _write_state(state_file, state)
        return dsn


def release_shared(user: str, directory: Path | None = None) -> bool:
    """Unregister ``user``; stop and delete the cluster when no live user is left.

    Returns True when the cluster was stopped.
    """
    directory = directory or shared_dir()
    state_file = directory / "state.json"
    if not state_file.exists():
        return False
    with _lock(directory):
        state = _read_state(state_file)
        if state is None:
            return False
        users = [u for u in state.get("users", []) if u != user and _user_alive(u)]
        if users:
            state["users"] = users
            _write_state(state_file, state)
            return False
        Cluster(Path(state["cluster_dir"])).stop()
        state_file.unlink(missing_ok=True)
        return True


def find_or_start(user: str | None = None) -> PgServer:
    """A reachable server: DBGUARD_TEST_DSN first, else the shared throwaway cluster."""
    env_problem = ""
    dsn = os.environ.get(DSN_ENV, "").strip()
    if dsn:
        problem = check_reachable(dsn)
        if problem is None:
            return PgServer(dsn=dsn, source="env")
        env_problem = f"{DSN_ENV} is set but not reachable ({problem}); "
    try:
        started = acquire_shared(user or os.environ.get(SESSION_ENV) or current_user_id())
    except PgUnavailable as exc:
        raise PgUnavailable(f"{env_problem}starting a throwaway server failed: {exc}") from None
    except Exception as exc:
        raise PgUnavailable(
            f"{env_problem}starting a throwaway server failed: {type(exc).__name__}: {exc}"
        ) from exc
    return PgServer(dsn=started, source="started")


# -- command line ---------------------------------------------------------------------------------


def _default_cli_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"pytest-dbguard-ci-{os.getuid()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.pgserver", description=__doc__)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, default=None, help="where the cluster lives")
    args = parser.parse_args(argv)
    directory: Path = args.dir or _default_cli_dir()
    if args.action == "stop":
        Cluster(directory).stop()
        print(f"stopped the PostgreSQL server in {directory}", file=sys.stderr)
        return 0
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        dsn = Cluster(directory).start()
    except PgUnavailable as exc:
        print(f"could not start PostgreSQL: {exc}", file=sys.stderr)
        Cluster(directory).stop()
        return 1
    print(f"started PostgreSQL in {directory}", file=sys.stderr)
    print(dsn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
