"""The bucket Alma's integration profile polls: S3 in production, a folder standing in for it."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr

from ..domain.packaging import object_key
from . import faults


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
