"""Resources: the warehouse, the bucket and the institution's data, production or embedded."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

import dagster as dg
import pandas as pd
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource
from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import Field, PrivateAttr

from . import faults, institutions
from .domain.institution import Rules
from .domain.load import Institution
from .domain.packaging import AlmaLimits, object_key
from .frames import frame_from_batches


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


# -- Bucket -------------------------------------------------------------------------------------


class Bucket(dg.ConfigurableResource):
    """Where Alma's integration profile picks up the zips: keys are ``{prefix}/{name}``."""

    prefix: str = ""

    def upload(self, path: Path, key: str) -> None:
        raise NotImplementedError

    def list_keys(self) -> list[str]:
        """Every key under the prefix."""
        return sorted(self.list_objects())

    def list_objects(self, under: str | None = None) -> dict[str, dt.datetime]:
        """Every key starting with ``under`` (default: the prefix's folder), with when it was
        last written (UTC)."""
        raise NotImplementedError

    def delete(self, keys: list[str]) -> None:
        raise NotImplementedError

    def abort_uploads(
        self, under: str, exact: bool = False, started_before: dt.datetime | None = None
    ) -> int:
        """Abort uploads left open under ``under``; how many (a folder's upload is one rename: none)."""
        return 0

    def url(self, key: str) -> str:
        raise NotImplementedError

    def download(self, key: str, path: Path) -> None:
        """The object at ``key`` into the file ``path``; ``FileNotFoundError`` when there is none."""
        raise NotImplementedError

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path | None]:
        """The object at ``key`` as a file on this disk while the block runs (``None`` when there
        is none): downloaded to a temporary folder, removed after."""
        with tempfile.TemporaryDirectory(prefix="patronload-object-") as folder:
            path = Path(folder) / Path(key).name
            try:
                self.download(key, path)
            except FileNotFoundError:
                yield None
                return
            yield path

    def _folder(self) -> str:
        return object_key(self.prefix, "")  # "alma/", or "" with no prefix


class LocalBucket(Bucket):
    """A folder standing in for the bucket."""

    directory: str

    def path_of(self, key: str) -> Path:
        return Path(self.directory) / key

    def upload(self, path: Path, key: str) -> None:
        target = self.path_of(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Copied under a hidden name, then renamed: the key appears whole or not at all.
        with (
            open(path, "rb") as source,
            tempfile.NamedTemporaryFile(dir=target.parent, prefix=".upload-", delete=False) as partial,
        ):
            shutil.copyfileobj(source, partial, 1 << 20)
        os.replace(partial.name, target)
        if target.stat().st_size != path.stat().st_size:
            raise OSError(f"{key}: stored size differs from the file written")

    def list_objects(self, under: str | None = None) -> dict[str, dt.datetime]:
        under = self._folder() if under is None else under
        root = Path(self.directory)
        # The deepest folder named whole by ``under``: "reports/run/" is a folder, "reports/ru" is not.
        folder = root / under[: under.rfind("/") + 1]
        if not folder.is_dir():
            return {}
        found = {}
        for path in folder.rglob("*"):
            key = path.relative_to(root).as_posix()
            if key.startswith(under) and path.is_file() and not path.name.startswith(".upload-"):
                found[key] = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
        return found

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self.path_of(key).unlink(missing_ok=True)

    def url(self, key: str) -> str:
        return str(self.path_of(key).resolve())

    def download(self, key: str, path: Path) -> None:
        shutil.copyfile(self.path_of(key), path)

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path | None]:
        """The stored file itself: no copy."""
        path = self.path_of(key)
        yield path if path.is_file() else None


class S3Bucket(Bucket):
    """An S3 bucket (or MinIO / a local S3 server through the S3 resource's endpoint).

    Every call is retried by botocore (standard mode) and then, while the error may pass
    (:mod:`faults`: SlowDown, a 5xx, a connection reset), for ``retry_minutes`` more, each try
    logged; a permanent error (access denied, no such bucket) fails at once naming the bucket, the
    operation and what to do. A failed upload leaves no multipart upload open."""

    bucket: str
    s3: S3Resource
    kms_key_id: str | None = None
    retry_minutes: float = Field(
        default=5, gt=0, description="How long a transient S3 failure is retried (S3_RETRY_MINUTES)."
    )
    multipart_bytes: int = Field(
        default=8 << 20, gt=0, description="Files from this size go up in parts (boto3's default)."
    )
    _client: object = PrivateAttr(default=None)

    def _get_client(self):
        if self._client is None:
            self._client = self.s3.get_client()
        return self._client

    def _call(self, operation: str, call):
        return faults.retry(
            call, f"S3 (s3://{self.bucket})", operation, self.retry_minutes * 60, dg.get_dagster_logger()
        )

    def upload(self, path: Path, key: str) -> None:
        encryption = (
            {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
            if self.kms_key_id
            else {"ServerSideEncryption": "AES256"}
        )  # every object encrypted at rest, whatever the bucket's default
        client = self._get_client()
        transfer = TransferConfig(multipart_threshold=self.multipart_bytes)

        def attempt() -> None:
            try:
                # A managed transfer: large files go up in parts, never read whole into memory.
                client.upload_file(str(path), self.bucket, key, ExtraArgs=encryption, Config=transfer)
            except BaseException:
                self.abort_uploads(key, exact=True)  # what the transfer could not abort itself
                raise
            stored = client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
            if stored != path.stat().st_size:
                raise ConnectionError(f"s3://{self.bucket}/{key}: stored size differs from the file written")

        self._call(f"upload of {key}", attempt)

    def abort_uploads(
        self, under: str, exact: bool = False, started_before: dt.datetime | None = None
    ) -> int:
        """Abort the multipart uploads left open under ``under`` (only of the key itself with
        ``exact``; only those started before ``started_before``): an open upload is stored, and billed,
        until aborted. Best effort: the bucket's lifecycle rule for incomplete uploads is the backstop.
        How many were aborted."""
        client, aborted = self._get_client(), 0
        try:
            paginator = client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=under):
                for upload in page.get("Uploads", []):
                    if exact and upload["Key"] != under:
                        continue
                    if started_before is not None and upload["Initiated"] >= started_before:
                        continue
                    client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        except Exception as error:  # the bucket may be the very thing that failed
            code = faults.short(error)
            dg.get_dagster_logger().warning(
                f"S3 (s3://{self.bucket}): open uploads under {under} not aborted ({code})"
            )
        return aborted

    def list_objects(self, under: str | None = None) -> dict[str, dt.datetime]:
        under = self._folder() if under is None else under

        def attempt() -> dict[str, dt.datetime]:
            paginator = self._get_client().get_paginator("list_objects_v2")
            found = {}
            for page in paginator.paginate(Bucket=self.bucket, Prefix=under):
                found.update((item["Key"], item["LastModified"]) for item in page.get("Contents", []))
            return found

        return self._call(f"listing of {under or '/'}", attempt)

    def delete(self, keys: list[str]) -> None:
        client = self._get_client()
        for start in range(0, len(keys), 1000):  # the API's limit per request
            batch = [{"Key": key} for key in keys[start : start + 1000]]

            def attempt(batch=batch) -> None:
                response = client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
                errors = response.get("Errors") or []
                if errors:
                    failed = ", ".join(f"{error['Key']} ({error.get('Code')})" for error in errors)
                    kind = (
                        ConnectionError
                        if all(error.get("Code") in faults.AWS_TRANSIENT_CODES for error in errors)
                        else PermissionError
                    )
                    raise kind(f"could not delete from s3://{self.bucket}: {failed}")

            self._call(f"deletion of {len(batch)} object(s)", attempt)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def download(self, key: str, path: Path) -> None:
        def attempt() -> None:
            try:
                self._get_client().download_file(self.bucket, key, str(path))  # in parts, to disk
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                    raise FileNotFoundError(f"s3://{self.bucket}/{key}") from None
                raise

        try:
            self._call(f"download of {key}", attempt)
        except faults.DependencyFailure as failure:
            if isinstance(failure.__cause__, FileNotFoundError):
                raise failure.__cause__ from None
            raise


# -- Institution --------------------------------------------------------------------------------


class InstitutionData(dg.ConfigurableResource):
    """The institution (INSTITUTION: its rules, templates and department tables, any table
    replaced where a path is given), and how files are cut for Alma."""

    name: str = Field(default=institutions.DEFAULT, description="The institution whose rules apply.")
    staff_departments_path: str | None = None
    student_departments_path: str | None = None
    template_dir: str | None = None
    users_per_file: int = 50_000
    alma_user_xsd: str | None = Field(
        default=None, description="Alma's rest_user.xsd: every user is validated by it before upload."
    )

    def load(self) -> Institution:
        return Institution.load(
            self.rules(), self.staff_departments_path, self.student_departments_path, self.template_dir
        )

    def rules(self) -> Rules:
        return institutions.load(self.name)

    def limits(self) -> AlmaLimits:
        return AlmaLimits(users_per_file=self.users_per_file)


# -- Mail ---------------------------------------------------------------------------------------


class Mailer(dg.ConfigurableResource):
    """Where run reports go. ``recipients`` is comma-separated."""

    recipients: str = "patronload-reports@localhost"
    sender: str = "patronload@localhost"
    workspace: str = "dev"
    send_attempts: int = Field(default=3, description="Tries per tick before the report waits for the next.")
    backoff_seconds: float = Field(default=2.0, description="First wait between tries; doubles each time.")

    def recipient_list(self) -> list[str]:
        return [address.strip() for address in self.recipients.split(",") if address.strip()]

    def send(self, message: EmailMessage, name: str) -> str:
        """Deliver ``message``; ``name`` identifies it (run id and kind). Returns where it went."""
        raise NotImplementedError


class OutboxMailer(Mailer):
    """Messages written as ``.eml`` files to a folder: the embedded default."""

    directory: str

    def send(self, message: EmailMessage, name: str) -> str:
        folder = Path(self.directory)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{name}.eml"
        copies = 1
        while target.exists():  # never overwrite a message: a second one shows as such
            copies += 1
            target = folder / f"{name}-{copies}.eml"
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".sending-", delete=False) as partial:
            partial.write(message.as_bytes())
        os.replace(partial.name, target)
        return str(target)


class SesMailer(ResourceWithBoto3Configuration, Mailer):
    """Amazon SES through boto3 ``send_raw_email`` (dagster-aws has no SES resource)."""

    def send(self, message: EmailMessage, name: str) -> str:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(profile_name=self.profile_name)
        client = session.client(
            "ses",
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            use_ssl=self.use_ssl,
            verify=self.verify,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=Config(retries={"max_attempts": self.max_attempts or 5, "mode": "standard"}),
        )
        response = client.send_raw_email(
            Source=self.sender,
            Destinations=self.recipient_list(),
            RawMessage={"Data": message.as_bytes()},
        )
        return f"SES message {response['MessageId']}"
