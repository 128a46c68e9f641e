"""The warehouse the two views are read from: Oracle in production, the embedded SQLite file."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from .. import institutions
from ..domain.institution import Rules
from ..state.frames import frame_from_batches
from . import faults


def read_sql_for_names(rules: Rules, name: str, names: list[str]) -> tuple[str, dict[str, str]]:
    """The same query limited to some people (by the institution's person key), and its bind
    variables: the names are only ever values (``:name0``...), never SQL. Named binds run on Oracle
    and on SQLite alike."""
    binds = {f"name{number}": value for number, value in enumerate(names)}
    placeholders = ", ".join(f":{bind}" for bind in binds)
    where = f"WHERE UPPER(TRIM({rules.person_key})) IN ({placeholders})"
    query = f"SELECT * FROM (\n{rules.query(name)}\n) named {where}"
    return query, binds


# -- Warehouse ----------------------------------------------------------------------------------


class Warehouse(dg.ConfigurableResource):
    """Where the two views are read from. Every value comes back as text or ``None``."""

    fetch_batch_rows: int = Field(default=50_000, description="Rows fetched per round trip.")
    retry_minutes: float = Field(
        default=15,
        gt=0,
        description="How long a transient failure of an extraction (a connection cut, a maintenance "
        "window) is retried (WAREHOUSE_RETRY_MINUTES).",
    )

    def extract(
        self, rules: Rules, name: str, log, names: list[str] | None = None
    ) -> tuple[pd.DataFrame, Counter]:
        """The institution's query ``sql/<institution>/{name}.sql`` read whole, and its repairs. A
        transient failure (a connection lost mid-fetch, the warehouse down) is retried for
        ``retry_minutes``, each try from the start: the rows a failed try fetched are thrown away,
        never mixed with the next try's. A permanent one (a wrong password, a missing view) fails at
        once, naming the views the query reads. With ``names``, only those people's rows
        (:func:`read_sql_for_names`)."""
        query = rules.query(name)
        sql, binds = (query, None) if names is None else read_sql_for_names(rules, name, names)

        def attempt() -> tuple[pd.DataFrame, Counter]:
            repairs: Counter = Counter()
            return self.read_frame(sql, repairs, binds), repairs

        views = ", ".join(sorted(set(re.findall(r"\b(?:FROM|JOIN)\s+([\w.$#]+)", query, re.I))))
        return faults.retry(
            attempt,
            f"the warehouse ({self.describe()})",
            f"reading {views} (sql/{rules.name}/{name}.sql)",
            self.retry_minutes * 60,
            log,
        )

    @contextmanager
    def cursor(self) -> Iterator:
        raise NotImplementedError

    def read_frame(self, sql: str, repairs: Counter, binds: dict[str, str] | None = None) -> pd.DataFrame:
        """The query's rows as Arrow-backed text columns, fetched in batches."""
        with self.cursor() as cursor:
            if binds:
                cursor.execute(sql, binds)
            else:
                cursor.execute(sql)
            columns = [description[0].upper() for description in cursor.description]
            batches = iter(lambda: cursor.fetchmany(self.fetch_batch_rows), [])
            return frame_from_batches(columns, batches, repairs)

    def describe(self) -> str:
        """One line for logs: what kind of warehouse, never a credential."""
        raise NotImplementedError

    def server_version(self) -> tuple[str, str]:
        """(product, version) of the warehouse: the connection test."""
        raise NotImplementedError


_thick_mode_lock = threading.Lock()


def _init_thick_mode(lib_dir: str) -> None:
    """Oracle's client library is initialised once per process (a second call raises)."""
    import oracledb

    with _thick_mode_lock:
        if oracledb.is_thin_mode():
            oracledb.init_oracle_client(lib_dir=lib_dir)


def _text_output_handler(cursor, metadata):
    """Fetch every column as text: no float or date coercion (``10000948`` stays ``10000948``)."""
    import oracledb

    if metadata.type_code in (oracledb.DB_TYPE_CLOB, oracledb.DB_TYPE_NCLOB):
        return cursor.var(oracledb.DB_TYPE_LONG, arraysize=cursor.arraysize)
    if metadata.type_code is not oracledb.DB_TYPE_VARCHAR:
        return cursor.var(str, arraysize=cursor.arraysize)
    return None


class OracleWarehouse(Warehouse):
    """The Data Warehouse through python-oracledb: thin mode, or thick with ``lib_dir``."""

    user: str | None = None
    password: str | None = None
    host: str | None = None
    port: str | None = None
    sid: str | None = None
    service_name: str | None = None
    connector_json: str | None = Field(
        default=None,
        description="Existing deployments' DATAWAREHOUSE_CLOUDCONNECTOR_JSON: USER, PASSWORD, "
        "HOST, PORT, PATH (the SID).",
    )
    lib_dir: str | None = Field(default=None, description="Oracle Instant Client: thick mode.")
    prefetch_rows: int = 50_000

    def _settings(self) -> dict[str, str | None]:
        settings = {
            "user": self.user,
            "password": self.password,
            "host": self.host,
            "port": self.port,
            "sid": self.sid,
            "service_name": self.service_name,
        }
        if self.connector_json:
            try:
                connector = json.loads(self.connector_json)
            except json.JSONDecodeError:
                # The message of the decode error would quote the secret: name the setting only.
                raise ValueError("DATAWAREHOUSE_CLOUDCONNECTOR_JSON is not valid JSON") from None
            for key, setting in (("USER", "user"), ("PASSWORD", "password"), ("HOST", "host"),
                                 ("PORT", "port"), ("PATH", "sid")):  # fmt: skip
                settings[setting] = settings[setting] or (
                    str(connector[key]) if connector.get(key) is not None else None
                )
        return settings

    def connect(self):
        import oracledb

        if self.lib_dir:
            _init_thick_mode(self.lib_dir)
        settings = self._settings()
        missing = [name for name in ("user", "password", "host") if not settings[name]]
        if not (settings["sid"] or settings["service_name"]):
            missing.append("sid or service_name")
        if missing:
            raise ValueError(f"Oracle warehouse settings missing: {', '.join(missing)}")
        where = (
            {"service_name": settings["service_name"]}
            if settings["service_name"]
            else {"sid": settings["sid"]}
        )
        dsn = oracledb.makedsn(settings["host"], int(settings["port"] or 1521), **where)
        connection = oracledb.connect(user=settings["user"], password=settings["password"], dsn=dsn)
        connection.outputtypehandler = _text_output_handler
        return connection

    @contextmanager
    def cursor(self) -> Iterator:
        connection = self.connect()
        try:
            cursor = connection.cursor()
            cursor.arraysize = self.fetch_batch_rows
            cursor.prefetchrows = self.prefetch_rows
            yield cursor
        finally:
            connection.close()

    def server_version(self) -> tuple[str, str]:
        connection = self.connect()
        try:
            return "Oracle Database", connection.version
        finally:
            connection.close()

    def describe(self) -> str:
        return f"Oracle ({'thick' if self.lib_dir else 'thin'} mode)"


class SqliteWarehouse(Warehouse):
    """The embedded warehouse: a SQLite file, created with synthetic patrons when missing."""

    path: str
    institution: str = Field(default=institutions.DEFAULT, description="Whose synthetic views it holds.")
    synthetic_staff: int = 2_000
    synthetic_students: int = 3_000

    @contextmanager
    def cursor(self) -> Iterator:
        path = Path(self.path)
        if not path.exists():
            create = institutions.load(self.institution).create_warehouse
            create(path, self.synthetic_staff, self.synthetic_students)
        # Read-only: a missing or broken file is an error, never a new empty warehouse.
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            yield connection.cursor()
        finally:
            connection.close()

    def describe(self) -> str:
        return f"embedded SQLite warehouse {Path(self.path).name}"

    def server_version(self) -> tuple[str, str]:
        with self.cursor() as cursor:
            return "the embedded SQLite warehouse", cursor.execute("select sqlite_version()").fetchone()[0]
