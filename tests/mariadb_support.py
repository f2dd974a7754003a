"""MariaDB as the independent answer for Qserv-dialect queries (Qserv tests itself the same way: the same
rows in one unpartitioned MySQL database, the same query, the same result).

`mariadb_server()` connects to MariaDB on 127.0.0.1:3306 (root, no password) or, when none is reachable,
starts a private `mariadbd` (Debian's `mariadb-server` binaries) in a temporary directory on a free port;
`load_database()` makes a private database per test session with the rows, and scisql's functions as stored
SQL functions written from scisql's documented semantics (smonkewitz/scisql: angSep, s2PtInCircle,
s2PtInBox, fluxToAbMag, nanojanskyToAbMag), so the queries DMS runs can run there unchanged.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa

HOST, PORT, USER = "127.0.0.1", 3306, "root"


@dataclass(frozen=True)
class MariaDB:
    host: str
    port: int
    user: str
    unix_socket: str | None = None

    def connect(self, database: str | None = None) -> Any:
        import pymysql

        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password="",
            database=database,
            unix_socket=self.unix_socket,
            autocommit=True,
            charset="utf8mb4",
        )


def _reachable(server: MariaDB) -> str | None:
    try:
        server.connect().close()
    except Exception as exc:  # any failure to connect means: not usable
        return f"{type(exc).__name__}: {exc}"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def mariadb_server() -> Iterator[MariaDB]:
    """A usable MariaDB server, or `pytest.skip` with the reason none could be had."""
    import pytest

    try:
        import pymysql  # noqa: F401
    except ImportError:
        pytest.skip("PyMySQL is not installed (pip install -e '.[test]')")
    machine = MariaDB(HOST, PORT, USER)
    problem = (
        _reachable(machine) if not os.environ.get("DMS_TEST_PRIVATE_MARIADB") else "a private one wanted"
    )
    if problem is None:
        yield machine
        return
    install, daemon = shutil.which("mariadb-install-db"), shutil.which("mariadbd") or _sbin("mariadbd")
    if install is None or daemon is None:
        pytest.skip(f"no MariaDB on {HOST}:{PORT} ({problem}) and no mariadb-server binaries to start one")
    with _private_server(install, daemon) as server:
        yield server


def _sbin(name: str) -> str | None:
    path = f"/usr/sbin/{name}"
    return path if os.access(path, os.X_OK) else None


@contextmanager
def _private_server(install: str, daemon: str) -> Iterator[MariaDB]:
    import pytest

    root = tempfile.mkdtemp(prefix="dms-mariadb-")
    data, sock, port = f"{root}/data", f"{root}/mysqld.sock", _free_port()
    user = ["--user=root"] if os.geteuid() == 0 else []
    done = subprocess.run(
        [
            install,
            "--no-defaults",
            f"--datadir={data}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *user,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"mariadb-install-db failed: {done.stderr.strip().splitlines()[-1:]}")
    process = subprocess.Popen(
        [
            daemon,
            "--no-defaults",
            f"--datadir={data}",
            f"--socket={sock}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={root}/mysqld.pid",
            "--skip-log-bin",
            *user,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = MariaDB("127.0.0.1", port, "root", sock)
    try:
        deadline = time.monotonic() + 60
        while _reachable(server) is not None:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.skip("a private mariadbd did not start within 60 s")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


# ---- tables ------------------------------------------------------------------------------------------------

_TYPES = {
    pa.int8(): "TINYINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INT",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.float32(): "FLOAT",
    pa.string(): "VARCHAR(64)",
}


def _quote(name: str) -> str:
    if "`" in name:
        raise ValueError(f"unexpected name {name!r}")
    return f"`{name}`"


def create_table(
    conn: Any, name: str, table: pa.Table, virtual: tuple[np.ndarray, np.ndarray] | None
) -> None:
    """The table in MariaDB with the same rows (and Qserv's chunkId/subChunkId columns when partitioned)."""
    columns = [f"{_quote(f.name)} {_TYPES[f.type]}" for f in table.schema]
    if virtual is not None:
        columns += ["`chunkId` BIGINT", "`subChunkId` BIGINT"]
        table = table.append_column("chunkId", pa.array(virtual[0])).append_column(
            "subChunkId", pa.array(virtual[1])
        )
    with conn.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {_quote(name)} ({', '.join(columns)})")
        marks = ", ".join(["%s"] * table.num_columns)
        rows = [tuple(_plain(v) for v in row.values()) for row in table.to_pylist()]
        cursor.executemany(f"INSERT INTO {_quote(name)} VALUES ({marks})", rows)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


# scisql's semantics (smonkewitz/scisql src/udfs): a NULL argument gives 0 for the region tests; angles in
# degrees; s2PtInBox's longitude range wraps through 0 when lonMin > lonMax.
SCISQL_FUNCTIONS = [
    """CREATE FUNCTION scisql_angSep(ra1 DOUBLE, dec1 DOUBLE, ra2 DOUBLE, dec2 DOUBLE) RETURNS DOUBLE
    DETERMINISTIC
    RETURN CASE WHEN ra1 IS NULL OR dec1 IS NULL OR ra2 IS NULL OR dec2 IS NULL
        OR dec1 < -90 OR dec1 > 90 OR dec2 < -90 OR dec2 > 90 THEN NULL
    ELSE DEGREES(2 * ASIN(LEAST(1, SQRT(POW(SIN(RADIANS(dec2 - dec1) / 2), 2)
        + COS(RADIANS(dec1)) * COS(RADIANS(dec2)) * POW(SIN(RADIANS(ra2 - ra1) / 2), 2))))) END""",
    """CREATE FUNCTION scisql_s2PtInCircle(ra DOUBLE, decl DOUBLE, cra DOUBLE, cdecl DOUBLE, r DOUBLE)
    RETURNS INT DETERMINISTIC
    RETURN CASE WHEN ra IS NULL OR decl IS NULL OR cra IS NULL OR cdecl IS NULL OR r IS NULL THEN 0
        WHEN r < 0 OR r > 180 THEN NULL
        ELSE scisql_angSep(ra, decl, cra, cdecl) <= r END""",
    """CREATE FUNCTION _scisql_reduce(lon DOUBLE) RETURNS DOUBLE DETERMINISTIC
    RETURN lon - 360 * FLOOR(lon / 360)""",
    """CREATE FUNCTION scisql_s2PtInBox(ra DOUBLE, decl DOUBLE, ramin DOUBLE, declmin DOUBLE,
        ramax DOUBLE, declmax DOUBLE) RETURNS INT DETERMINISTIC
    RETURN CASE WHEN ra IS NULL OR decl IS NULL OR ramin IS NULL OR declmin IS NULL OR ramax IS NULL
            OR declmax IS NULL THEN 0
        WHEN decl < -90 OR decl > 90 OR declmin < -90 OR declmin > 90 OR declmax < -90 OR declmax > 90
            THEN NULL
        WHEN ramax < ramin AND (ramax < 0 OR ramin > 360) THEN NULL
        WHEN declmin > declmax OR decl < declmin OR decl > declmax THEN 0
        WHEN ramax - ramin >= 360 THEN 1
        WHEN _scisql_reduce(ramin) <= _scisql_reduce(ramax)
            THEN _scisql_reduce(ra) BETWEEN _scisql_reduce(ramin) AND _scisql_reduce(ramax)
        ELSE _scisql_reduce(ra) >= _scisql_reduce(ramin)
            OR _scisql_reduce(ra) <= _scisql_reduce(ramax) END""",
    """CREATE FUNCTION scisql_fluxToAbMag(flux DOUBLE) RETURNS DOUBLE DETERMINISTIC
    RETURN CASE WHEN flux > 0 THEN -2.5 * LOG10(flux) - 48.6 END""",
    """CREATE FUNCTION scisql_nanojanskyToAbMag(flux DOUBLE) RETURNS DOUBLE DETERMINISTIC
    RETURN CASE WHEN flux > 0 THEN -2.5 * LOG10(flux) + 31.4 END""",
]


@contextmanager
def load_database(
    server: MariaDB, tables: dict[str, pa.Table], virtual: dict[str, tuple[np.ndarray, np.ndarray]]
) -> Iterator[Any]:
    """A private database with the tables and the scisql functions; a connection to it; dropped after."""
    name = f"dms_qserv_{uuid.uuid4().hex[:10]}"
    admin = server.connect()
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {_quote(name)} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
    conn = server.connect(name)
    try:
        with conn.cursor() as cursor:
            for statement in SCISQL_FUNCTIONS:
                cursor.execute(statement)
        for table_name, table in tables.items():
            create_table(conn, table_name, table, virtual.get(table_name))
        yield conn
    finally:
        conn.close()
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {_quote(name)}")
        admin.close()


def mariadb_rows(conn: Any, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of a query (exact decimals as floats, as DMS returns them)."""
    with conn.cursor() as cursor:
        cursor.execute(sql)
        names = [d[0] for d in cursor.description or []]
        rows = [tuple(float(v) if isinstance(v, Decimal) else v for v in row) for row in cursor.fetchall()]
    return names, rows
