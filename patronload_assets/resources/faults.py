"""When a dependency fails: whether the error may pass on a later try, and what to tell the
operator when it will not. The one place that decides it, for every dependency of the load (the
warehouse, S3, SES; Alma's API keeps its HTTP statuses in ``alma/api.py``).

Transient: a connection lost, refused or timed out, throttling, a 5xx, a database starting or
stopping. Retried with backoff for a bounded time, each try logged. Permanent: a wrong password, a
missing view or column, an access denied, a missing bucket, a full disk, a bad request. Raised at
once as a :class:`DependencyFailure` naming the dependency, the operation and what to do.
"""

from __future__ import annotations

import errno
import re
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Error codes of AWS (S3, SES) that say "later": throttling, and the service's own trouble.
AWS_TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "TooManyRequestsException", "RequestLimitExceeded", "ProvisionedThroughputExceededException",
    "RequestTimeout", "RequestTimeoutException", "InternalError", "InternalFailure",
    "ServiceUnavailable", "ServiceUnavailableException", "BandwidthLimitExceeded", "IDPCommunicationError",
    "500", "502", "503", "504",
})  # fmt: skip
# Oracle and python-oracledb: the connection lost or refused, the database down or starting (a
# maintenance window), a timeout. Anything else from the warehouse is taken as permanent.
ORACLE_TRANSIENT_CODES = frozenset({
    "ORA-01033", "ORA-01034", "ORA-01089", "ORA-01090", "ORA-01092", "ORA-03113", "ORA-03114",
    "ORA-03135", "ORA-03136", "ORA-12170", "ORA-12514", "ORA-12516", "ORA-12518", "ORA-12519",
    "ORA-12520", "ORA-12521", "ORA-12526", "ORA-12528", "ORA-12537", "ORA-12541", "ORA-12543",
    "ORA-12547", "ORA-12571", "ORA-25401", "ORA-25408", "ORA-00028", "ORA-02396",
    "DPY-4011", "DPY-4024", "DPY-6000", "DPY-6001", "DPY-6005",
})  # fmt: skip
ORACLE_CODE = re.compile(r"\b((?:ORA|DPY|DPI)-\d{4,5})\b")
AWS_CODE = re.compile(r"An error occurred \(([A-Za-z0-9]+)\)")

# What to do, by the code of a permanent error.
ADVICE = {
    "ORA-01017": "the warehouse refused the user or password: check DATA_WAREHOUSE_USER and "
    "DATA_WAREHOUSE_PASSWORD (the yearly password change?), then run make db-test",
    "ORA-28000": "the warehouse account is locked: ask the warehouse's DBA to unlock it",
    "ORA-28001": "the warehouse password has expired: have it changed, set DATA_WAREHOUSE_PASSWORD, "
    "then run make db-test",
    "ORA-00942": "a view the query reads is missing, or the account may not read it: ask the "
    "warehouse's DBA (the views are named in the query)",
    "ORA-00904": "a column the query names is missing from the view: compare the view with the query "
    "under sql/ and ask the warehouse's DBA",
    "ORA-01031": "the account lacks a privilege the query needs: ask the warehouse's DBA",
    "AccessDenied": "the task's role lacks the permission for this call on the bucket: check its IAM "
    "policy and the bucket policy",
    "AllAccessDisabled": "access to the bucket is disabled: check the bucket and its owner's account",
    "NoSuchBucket": "the bucket does not exist: check the bucket's name setting (S3_BUCKET_NAME or "
    "STATE_BUCKET_NAME) and region",
    "InvalidAccessKeyId": "the AWS credentials are not valid: check the task role or AWS_ACCESS_KEY_ID",
    "SignatureDoesNotMatch": "the AWS secret key does not match: check AWS_SECRET_ACCESS_KEY",
    "ExpiredToken": "the AWS session token expired: check the task role's credentials",
    "KMS.AccessDeniedException": "the task's role may not use the KMS key S3_KMS_KEY_ID",
    "MessageRejected": "SES refused the message: verify the sender (SES_SEND_FROM_EMAIL) and, in the "
    "SES sandbox, the recipients",
}
TRANSIENT_ADVICE = (
    "it did not pass within the retries: nothing half done was left; the load is retried "
    "automatically, and if the failure persists check the dependency's health"
)


class DependencyFailure(RuntimeError):
    """A dependency's call that failed for good: which dependency, which operation, why, what to do."""

    def __init__(
        self, dependency: str, operation: str, error: BaseException, transient: bool, tries: int = 1
    ):
        self.dependency, self.operation, self.transient, self.tries = dependency, operation, transient, tries
        self.code = error_code(error)
        detail = describe(error)
        what = "transient" if transient else "permanent"
        after = f" after {tries} tries" if tries > 1 else ""
        super().__init__(
            f"{dependency}: {operation} failed{after} ({what}): {detail}. "
            f"What to do: {advice(error, transient)}"
        )


def _chain(error: BaseException):
    """The error, then its causes (an upload error wraps the S3 answer it got)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def error_code(error: BaseException) -> str | None:
    """The dependency's own code of an error: ``ORA-03113``, ``DPY-4011``, ``SlowDown``..."""
    for link in _chain(error):
        response = getattr(link, "response", None)
        if isinstance(response, dict):
            code = (response.get("Error") or {}).get("Code")
            if code:
                return str(code)
        found = ORACLE_CODE.search(str(link)) or AWS_CODE.search(str(link))
        if found:
            return found.group(1)
    return None


def short(error: BaseException) -> str:
    """The error in a word, for logs: its code, else the innermost cause's kind."""
    return error_code(error) or type(list(_chain(error))[-1]).__name__


def is_transient(error: BaseException) -> bool:
    """Whether the error may pass on a later try."""
    code = error_code(error)
    if code in ORACLE_TRANSIENT_CODES or code in AWS_TRANSIENT_CODES:
        return True
    if code is not None and code in ADVICE:
        return False
    for link in _chain(error):
        if _transient_kind(link):
            return True
        response = getattr(link, "response", None)
        if isinstance(response, dict):
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
            return status >= 500 or status == 429
    return False


def _transient_kind(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM):
        return False  # a full disk or a refused permission does not pass by waiting
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    if isinstance(error, sqlite3.OperationalError):
        return "locked" in str(error) or "busy" in str(error)
    name = type(error).__name__
    module = type(error).__module__ or ""
    # botocore's and urllib3's connection errors (no import needed to recognise them)
    if module.startswith(("botocore", "urllib3")) and name in {
        "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
        "ConnectionError", "ProxyConnectionError", "ResponseStreamingError", "IncompleteReadError",
        "ProtocolError", "HTTPClientError", "NewConnectionError",
    }:  # fmt: skip
        return True
    return module.startswith("psycopg2") and name in {"OperationalError", "InterfaceError"}


def describe(error: BaseException) -> str:
    """The error in one line, innermost cause included when it says more."""
    lines = []
    for link in _chain(error):
        text = " ".join(str(link).split()) or type(link).__name__
        if not any(text in line for line in lines):
            lines.append(f"{type(link).__name__}: {text}")
    return " <- ".join(lines[:3])


def advice(error: BaseException, transient: bool | None = None) -> str:
    transient = is_transient(error) if transient is None else transient
    if transient:
        return TRANSIENT_ADVICE
    code = error_code(error)
    if code in ADVICE:
        return ADVICE[code]
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno in (errno.ENOSPC, errno.EDQUOT):
            return "the disk is full: give the run's task more disk (ECS ephemeral storage)"
        if isinstance(link, sqlite3.OperationalError) and "no such" in str(link):
            return "the embedded warehouse lacks a view or column the query reads: check the file"
    return "this will not pass by retrying: read the error, correct the cause, then run the load again"


def retry(
    call: Callable[[], T],
    dependency: str,
    operation: str,
    within_seconds: float,
    log=None,
    first_wait: float = 2.0,
    longest_wait: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()`` until it succeeds. A transient error is retried with exponential backoff while
    ``within_seconds`` allow, each try logged; a permanent one, or a transient one past the time, is
    raised at once as a :class:`DependencyFailure`."""
    started, tries = clock(), 0
    while True:
        tries += 1
        try:
            return call()
        except DependencyFailure:
            raise
        except Exception as error:
            transient = is_transient(error)
            wait = min(longest_wait, first_wait * 2 ** (tries - 1))
            if not transient or clock() - started + wait > within_seconds:
                raise DependencyFailure(dependency, operation, error, transient, tries) from error
            if log is not None:
                log.warning(
                    f"{dependency}: {operation} failed (try {tries}, {short(error)}); retrying in {wait:g} s"
                )
            sleep(wait)
