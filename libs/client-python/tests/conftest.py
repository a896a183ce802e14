"""Fixtures of the eventflow_client tests: the real binaries over a private redis-server (the
helpers of examples/python/test_client.py), a private PostgreSQL (initdb + postgres on a free
port in a temp dir, as libs/testkit does for the Rust tests), and the package imported from
this source tree (so the tests check the code here, not an older installed copy)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent
REPO = PACKAGE_ROOT.parent.parent
sys.path.insert(0, str(PACKAGE_ROOT))
sys.path.insert(0, str(REPO / "examples" / "python"))

from test_client import binaries, free_port, redis_url, stop, tail  # noqa: E402,F401  (redis_url: a fixture)

STARTUP_TIMEOUT = 30.0


def _pg_bin() -> Path:
    """The directory of initdb/postgres: PATH first, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    for c in reversed(candidates):
        if (c / "initdb").exists():
            return c
    pytest.fail("PostgreSQL (initdb, postgres) not found: run scripts/ensure-deps.sh postgres")


def _as_postgres_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the `postgres` user then (as testkit does)."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *argv]


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory):
    """A private PostgreSQL (trust auth, fsync off) on a free port; yields its base URL
    (`postgresql://postgres@127.0.0.1:P`); each test creates its own database."""
    import psycopg

    bindir = _pg_bin()
    workdir = tmp_path_factory.mktemp("pg")
    data, sock = workdir / "data", workdir / "socket"
    sock.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--system", "postgres"], check=True)
        shutil.chown(workdir, "postgres", "postgres")
        shutil.chown(sock, "postgres", "postgres")
        os.chmod(workdir.parent, 0o755)
        os.chmod(workdir.parent.parent, 0o755)
    init = subprocess.run(_as_postgres_user([str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                                             "--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C"]),
                          capture_output=True, cwd=workdir)
    if init.returncode != 0:
        pytest.fail(f"initdb failed: {init.stderr.decode(errors='replace')}")
    port = free_port()
    log = workdir / "postgres.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(_as_postgres_user([str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                                                   "-k", str(sock), "-c", "listen_addresses=127.0.0.1",
                                                   "-c", "fsync=off"]),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
    url = f"postgresql://postgres@127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                psycopg.connect(f"{url}/postgres", connect_timeout=1).close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None:
                    pytest.fail(f"postgres exited with {proc.returncode}:\n{tail(log)}")
                if time.monotonic() > deadline:
                    pytest.fail(f"postgres not accepting connections after {STARTUP_TIMEOUT}s:\n{tail(log)}")
                time.sleep(0.05)  # poll interval, bounded by the deadline
        yield url
    finally:
        stop(proc)


@pytest.fixture
def database(pg_url: str) -> str:
    """A new database of the session's PostgreSQL; yields its conninfo URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{pg_url}/{name}"


@pytest.fixture(scope="session")
def services(redis_url: str, tmp_path_factory: pytest.TempPathFactory):
    """eventflow-publisher, -subscriber and -admin, healthy; yields {"publisher": "host:port", ...}."""
    with binaries(("publisher", "subscriber", "admin"), redis_url, f"efc-{uuid.uuid4().hex[:8]}",
                  tmp_path_factory.mktemp("logs"), {}) as addrs:
        yield addrs
