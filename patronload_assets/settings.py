"""Which resources a deployment gets, decided by which settings are present.

Only the *presence* of a variable is read here. Values reach resources through ``dg.EnvVar``, so
the UI shows a variable's name, never its value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource

from . import institutions
from .alma.api import AlmaJobs, AlmaUsers
from .configuration import ConfigurationError, institution_setting, number_setting
from .domain.packaging import object_key
from .resources.bucket import Bucket, LocalBucket, S3Bucket
from .resources.institution import InstitutionData
from .resources.mail import Mailer, OutboxMailer, SesMailer
from .resources.warehouse import OracleWarehouse, SqliteWarehouse, Warehouse
from .state.store import REPORT_RETENTION_DAYS, BucketState, FrameIOManager, InstanceState, StateStore

# The embedded defaults live in the working folder (the project root for make run and dagster dev),
# never beside the installed package.
LOCAL_DIR = Path(".local")
LOCAL_DEFAULTS = {
    "LOCAL_WAREHOUSE_PATH": "warehouse.sqlite3",
    "LOCAL_BUCKET_DIR": "bucket",
    "LOCAL_OUTBOX_DIR": "outbox",
}
PRODUCTION_WORKSPACES = ("stage", "prod")
WAREHOUSE_SETTINGS = (
    "DATA_WAREHOUSE_USER",
    "DATA_WAREHOUSE_PASSWORD",
    "DATA_WAREHOUSE_HOST",
    "DATA_WAREHOUSE_PORT",
)
BUCKET_SETTINGS = ("S3_BUCKET_NAME", "S3_PREFIX")
STATE_SETTINGS = ("STATE_BUCKET_NAME",)  # what every task of a deployment reads: never a task's disk
MAIL_SETTINGS = ("SES_RECIPIENT_EMAIL", "SES_SEND_FROM_EMAIL")
STATE_PREFIX = "patronload/"


def _present(environ: Mapping[str, str], name: str) -> bool:
    return bool(environ.get(name, "").strip())


def _env(environ: Mapping[str, str], name: str):
    """``EnvVar(name)`` when the variable is set, else ``None``."""
    return dg.EnvVar(name) if _present(environ, name) else None


def local_setting(environ: Mapping[str, str], name: str):
    """A ``LOCAL_*`` location: the variable when set, else in the working folder's ``.local``
    (``.local/<institution>`` for an institution other than the default: switching INSTITUTION
    never mixes two institutions' warehouses, buckets or outboxes)."""
    if _present(environ, name):
        return dg.EnvVar(name)
    return str(Path.cwd() / LOCAL_DIR / own_folder(environ) / LOCAL_DEFAULTS[name])


def own_folder(environ: Mapping[str, str]) -> str:
    """Where an institution keeps what is its own beside another's: nothing for the default
    institution (its paths and keys as they always were), its name for any other."""
    name = institution_name(environ)
    return "" if name == institutions.DEFAULT else name


def workspace(environ: Mapping[str, str]) -> str:
    return environ.get("WORKSPACE", "").strip().lower() or "dev"


def missing_production_settings(environ: Mapping[str, str]) -> list[str]:
    """Every production variable that is not set, by name."""
    missing = []
    if not _present(environ, "DATAWAREHOUSE_CLOUDCONNECTOR_JSON"):
        missing += [name for name in WAREHOUSE_SETTINGS if not _present(environ, name)]
        if not (_present(environ, "DATA_WAREHOUSE_SID") or _present(environ, "DATA_WAREHOUSE_SERVICE_NAME")):
            missing.append("DATA_WAREHOUSE_SID (or DATA_WAREHOUSE_SERVICE_NAME)")
    missing += [
        name for name in (*BUCKET_SETTINGS, *STATE_SETTINGS, *MAIL_SETTINGS) if not _present(environ, name)
    ]
    return missing


def check_workspace(environ: Mapping[str, str]) -> None:
    """In stage and prod, refuse to load with any production setting missing: synthetic data
    must never reach a real bucket."""
    name = workspace(environ)
    if name in PRODUCTION_WORKSPACES:
        missing = missing_production_settings(environ)
        if missing:
            raise ConfigurationError(
                f"WORKSPACE={name} needs every production setting; missing: {', '.join(missing)}"
            )


def warehouse_resource(environ: Mapping[str, str]) -> Warehouse:
    retrying = {"retry_minutes": number_setting(environ, "WAREHOUSE_RETRY_MINUTES", 15, float)}
    if _present(environ, "DATA_WAREHOUSE_HOST") or _present(environ, "DATAWAREHOUSE_CLOUDCONNECTOR_JSON"):
        return OracleWarehouse(
            user=_env(environ, "DATA_WAREHOUSE_USER"),
            password=_env(environ, "DATA_WAREHOUSE_PASSWORD"),
            host=_env(environ, "DATA_WAREHOUSE_HOST"),
            port=_env(environ, "DATA_WAREHOUSE_PORT"),
            sid=_env(environ, "DATA_WAREHOUSE_SID"),
            service_name=_env(environ, "DATA_WAREHOUSE_SERVICE_NAME"),
            connector_json=_env(environ, "DATAWAREHOUSE_CLOUDCONNECTOR_JSON"),
            lib_dir=_env(environ, "ORACLE_LIB_DIR"),
            **retrying,
        )
    return SqliteWarehouse(
        path=local_setting(environ, "LOCAL_WAREHOUSE_PATH"), institution=institution_name(environ), **retrying
    )


def _s3(environ: Mapping[str, str]) -> S3Resource:
    """The S3 client settings both buckets share (Alma's, and the state bucket)."""
    return S3Resource(
        endpoint_url=_env(environ, "S3_ENDPOINT_URL"),
        region_name=_env(environ, "AWS_REGION") or _env(environ, "AWS_DEFAULT_REGION"),
        aws_access_key_id=_env(environ, "AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=_env(environ, "AWS_SECRET_ACCESS_KEY"),
        aws_session_token=_env(environ, "AWS_SESSION_TOKEN"),
    )


def bucket_resource(environ: Mapping[str, str]) -> Bucket:
    prefix = _env(environ, "S3_PREFIX") or ""
    if _present(environ, "S3_BUCKET_NAME"):
        return S3Bucket(
            bucket=dg.EnvVar("S3_BUCKET_NAME"),
            prefix=prefix,
            kms_key_id=_env(environ, "S3_KMS_KEY_ID"),
            s3=_s3(environ),
            retry_minutes=number_setting(environ, "S3_RETRY_MINUTES", 5, float),
        )
    return LocalBucket(directory=local_setting(environ, "LOCAL_BUCKET_DIR"), prefix=prefix)


def state_resource(environ: Mapping[str, str]) -> StateStore:
    """The state bucket when ``STATE_BUCKET_NAME`` is set, else the instance's storage folder."""
    retention = number_setting(environ, "REPORT_RETENTION_DAYS", REPORT_RETENTION_DAYS)
    if _present(environ, "STATE_BUCKET_NAME"):
        bucket = S3Bucket(
            bucket=dg.EnvVar("STATE_BUCKET_NAME"),
            prefix=_env(environ, "STATE_PREFIX") or object_key(STATE_PREFIX, own_folder(environ)),
            kms_key_id=_env(environ, "S3_KMS_KEY_ID"),
            s3=_s3(environ),
            retry_minutes=number_setting(environ, "S3_RETRY_MINUTES", 5, float),
        )
        return BucketState(bucket=bucket, report_retention_days=retention)
    return InstanceState(report_retention_days=retention, folder=own_folder(environ))


def institution_name(environ: Mapping[str, str]) -> str:
    """``INSTITUTION`` (default ``mit``), checked now: an unknown one fails the code location's
    load, naming the institutions there are. A name, never a secret: the UI may show it."""
    return institutions.load(institution_setting(environ)).name


def institution_resource(environ: Mapping[str, str]) -> InstitutionData:
    return InstitutionData(
        name=institution_name(environ),
        staff_departments_path=_env(environ, "STAFF_DEPARTMENTS_PATH"),
        student_departments_path=_env(environ, "STUDENT_DEPARTMENTS_PATH"),
        template_dir=_env(environ, "INSTITUTION_TEMPLATE_DIR"),
        alma_user_xsd=_env(environ, "ALMA_USER_XSD"),
    )


def mailer_resource(environ: Mapping[str, str]) -> Mailer:
    addressing = {
        "workspace": _env(environ, "WORKSPACE") or "dev",
        **(
            {"recipients": dg.EnvVar("SES_RECIPIENT_EMAIL")}
            if _present(environ, "SES_RECIPIENT_EMAIL")
            else {}
        ),
        **({"sender": dg.EnvVar("SES_SEND_FROM_EMAIL")} if _present(environ, "SES_SEND_FROM_EMAIL") else {}),
    }
    if all(_present(environ, name) for name in MAIL_SETTINGS):
        return SesMailer(
            **addressing,
            region_name=_env(environ, "SES_REGION")
            or _env(environ, "AWS_REGION")
            or _env(environ, "AWS_DEFAULT_REGION"),
            endpoint_url=_env(environ, "SES_ENDPOINT_URL"),
        )
    return OutboxMailer(directory=local_setting(environ, "LOCAL_OUTBOX_DIR"), **addressing)


def alma_resource(environ: Mapping[str, str]) -> AlmaJobs | None:
    """Alma's Jobs API, when ``ALMA_API_KEY`` is set (docs/patron-rules.md §12); else ``None``: the
    verdict is not followed and nothing of it appears."""
    if not _present(environ, "ALMA_API_KEY"):
        return None
    if not (_present(environ, "ALMA_SIS_JOB_ID") or _present(environ, "ALMA_SIS_PROFILE_ID")):
        if workspace(environ) in PRODUCTION_WORKSPACES:
            raise ConfigurationError("ALMA_API_KEY is set: set ALMA_SIS_JOB_ID (or ALMA_SIS_PROFILE_ID) too")
        return None  # in dev, a key alone is for patronload_now: no job to follow
    located = {
        name: dg.EnvVar(variable)
        for name, variable in (
            ("base_url", "ALMA_API_BASE_URL"),
            ("job_id", "ALMA_SIS_JOB_ID"),
            ("profile_id", "ALMA_SIS_PROFILE_ID"),
        )
        if _present(environ, variable)
    }  # fmt: skip
    return AlmaJobs(
        api_key=dg.EnvVar("ALMA_API_KEY"),
        poll_minutes=number_setting(environ, "ALMA_POLL_MINUTES", 10, float),
        wait_hours=number_setting(environ, "ALMA_JOB_WAIT_HOURS", 26, float),
        **located,
    )


def alma_users_resource(environ: Mapping[str, str]) -> AlmaUsers | None:
    """Alma's Users API for ``patronload_now`` (docs/patron-rules.md §13), with the same key (which
    then needs Users read/write). In dev, users are created only at a base URL set explicitly."""
    if not _present(environ, "ALMA_API_KEY"):
        return None
    explicit = _present(environ, "ALMA_API_BASE_URL")
    return AlmaUsers(
        api_key=dg.EnvVar("ALMA_API_KEY"),
        **({"base_url": dg.EnvVar("ALMA_API_BASE_URL")} if explicit else {}),
        may_send=explicit or workspace(environ) != "dev",
    )


def resources(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    environ = os.environ if environ is None else environ
    check_workspace(environ)
    alma = alma_resource(environ)
    alma_users = alma_users_resource(environ)
    state = state_resource(environ)
    return {
        "warehouse": warehouse_resource(environ),
        "bucket": bucket_resource(environ),
        "state": state,
        "io_manager": FrameIOManager(state=state, institution=institution_name(environ)),
        "institution": institution_resource(environ),
        "mailer": mailer_resource(environ),
        **({"alma": alma} if alma is not None else {}),
        **({"alma_users": alma_users} if alma_users is not None else {}),
    }


def init_sentry(environ: Mapping[str, str]) -> None:
    """With ``SENTRY_DSN`` set, errors go to Sentry tagged with the workspace. The DSN is read by
    sentry_sdk from the environment itself, never copied into a definition."""
    if not _present(environ, "SENTRY_DSN"):
        return
    import sentry_sdk

    sentry_sdk.init(environment=workspace(environ))
    sentry_sdk.set_tag("workspace", workspace(environ))
