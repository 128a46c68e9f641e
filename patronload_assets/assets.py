"""The load's assets: a thin shell over the domain. Read from a resource, call the domain,
record counts, codes and keys as metadata (never a name, email, phone or address)."""

import datetime as dt
import shutil
from collections import Counter
from collections.abc import Iterable, Set

import dagster as dg
import pandas as pd
from pydantic import Field

from . import frames, storage
from .domain import checks, rules
from .domain.load import STAFF, STUDENT, PatronType, build_zips
from .domain.packaging import (
    PackagingError,
    latest_set,
    newer_keys,
    object_key,
    patrons_in_zip_tail,
    stale_keys,
)
from .domain.values import kerberos_keys
from .resources import Bucket, InstitutionData, Warehouse, read_sql
from .timing import ZIP_FRESHNESS

GROUP = "patronload"
POOL = "patronload"  # one patronload run at a time: the instance limits the pool (dagster.yaml)


def _read_view(context: dg.AssetExecutionContext, warehouse: Warehouse, patron_type: PatronType):
    repairs: Counter = Counter()
    frame = warehouse.read_frame(read_sql(patron_type.name), repairs)
    missing = [column for column in patron_type.columns if column not in frame.columns]
    if missing:
        raise ValueError(f"the {patron_type.name} query returned no {', '.join(missing)} column")
    frame = frame[list(patron_type.columns)]
    context.log.info(f"{len(frame)} {patron_type.name} rows read from the {warehouse.describe()}")
    return dg.Output(frame, metadata={"rows": len(frame), "columns": len(frame.columns), **_counts(repairs)})


@dg.asset(group_name=GROUP, pool=POOL, kinds={"sql", "pandas"})
def staff_rows(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.Output[pd.DataFrame]:
    """The staff extract (sql/staff.sql), every column text."""
    return _read_view(context, warehouse, STAFF)


@dg.asset(group_name=GROUP, pool=POOL, kinds={"sql", "pandas"})
def student_rows(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.Output[pd.DataFrame]:
    """The student extract (sql/student.sql), every column text."""
    return _read_view(context, warehouse, STUDENT)


@dg.asset(group_name=GROUP, pool=POOL, kinds={"pandas"})
def deduplicated_students(
    context: dg.AssetExecutionContext, staff_rows: pd.DataFrame, student_rows: pd.DataFrame
) -> dg.Output[pd.DataFrame]:
    """Students with a Kerberos name that is not already staff, one row each (first wins)."""
    selection = rules.select_patrons(
        frames.column(student_rows, "KRB_NAME_UPPERCASE"),
        already_loaded=kerberos_keys(frames.column(staff_rows, "KRB_NAME_UPPERCASE")),
        duplicate_reason=rules.DROPPED_DUPLICATE_STUDENT,
    )
    students = student_rows.iloc[selection.kept].reset_index(drop=True)
    context.log.info(
        f"{len(students)} of {len(student_rows)} student rows kept; left out: {_describe(selection.left_out)}"
    )
    return dg.Output(
        students,
        metadata={
            "rows": len(students),
            "rows_read": len(student_rows),
            **_counts(selection.left_out, rules.STUDENT_LEFT_OUT),
        },
    )


class ZipConfig(dg.Config):
    """Run config of a zip asset (the launchpad's ``ops: {staff_zip: {config: ...}}``)."""

    allow_shrink: bool = Field(
        default=False,
        description="Upload even if the patron count dropped more than max_drop_share since the last "
        "load. A deliberate one-run override, logged: check the drop is real first.",
    )
    max_drop_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="The largest drop from the last load that uploads without override.",
    )
    max_invalid_share: float = Field(
        default=checks.MAX_INVALID_SHARE,
        ge=0,
        le=1,
        description="Users failing the schema check are left out of the file and named in the run report; "
        "more than this share of the type's users is a systemic fault that holds the type back.",
    )


def _check_specs(asset_name: str, patron_type: PatronType) -> list[dg.AssetCheckSpec]:
    names = [checks.SCHEMA, checks.SHRINK, checks.LIMITS, checks.UNKNOWN_DEPARTMENTS, checks.REPAIRS]
    if patron_type is STUDENT:
        names.append(checks.USER_GROUPS)
    return [
        dg.AssetCheckSpec(
            name, asset=asset_name, blocking=name in checks.BLOCKING, description=CHECK_DESCRIPTIONS[name]
        )
        for name in names
    ]


def _zip_asset(asset_name: str, patron_type: PatronType) -> dict:
    """What both zip assets declare: group, the one-run pool, kinds, checks, freshness."""
    return {
        "group_name": GROUP,
        "pool": POOL,
        "kinds": {"s3", "xml"},
        "check_specs": _check_specs(asset_name, patron_type),
        "freshness_policy": ZIP_FRESHNESS,
    }


CHECK_DESCRIPTIONS = {
    checks.SCHEMA: "Every user, parsed from the files as written, valid against the project's schema of what "
    "it sends (and Alma's rest_user.xsd when ALMA_USER_XSD names it); one preferred segment a list; no "
    "primary id or identifier repeated in the load. A few invalid users are left out of the file and named "
    "in the run report; more than max_invalid_share blocks the upload.",
    checks.SHRINK: "The patron count did not drop more than max_drop_share from the last load. "
    "Blocks the upload.",
    checks.LIMITS: "Alma's limits: 4 GB a zip, 50 XML files a zip, 20 zips a load. Blocks the upload.",
    checks.UNKNOWN_DEPARTMENTS: "Department codes the institution's table does not know (warning).",
    checks.REPAIRS: "Values repaired on the way: control characters, non-text values, cut lengths (warning).",
    checks.USER_GROUPS: "Students the rules give no user group (warning).",
}


@dg.asset(**_zip_asset("staff_zip", STAFF))
def staff_zip(
    context: dg.AssetExecutionContext,
    config: ZipConfig,
    staff_rows: pd.DataFrame,
    bucket: Bucket,
    institution: InstitutionData,
):
    """The staff zip in the bucket Alma polls, uploaded only when its blocking checks pass."""
    selection = rules.select_patrons(
        frames.column(staff_rows, "KRB_NAME_UPPERCASE"), duplicate_reason=rules.DROPPED_DUPLICATE_STAFF
    )
    staff = frames.records(staff_rows, keep=selection.kept)  # the kept rows, without a copy
    yield from _publish(
        context, config, STAFF, staff, len(selection.kept), selection.left_out, bucket, institution
    )


@dg.asset(
    **_zip_asset("student_zip", STUDENT),
    # The staff file's identifiers are not the students' to take: only these columns are read.
    ins={"staff_rows": dg.AssetIn(metadata={"columns": ["KRB_NAME_UPPERCASE", *rules.IDENTIFIER_COLUMNS]})},
)
def student_zip(
    context: dg.AssetExecutionContext,
    config: ZipConfig,
    deduplicated_students: pd.DataFrame,
    staff_rows: pd.DataFrame,
    bucket: Bucket,
    institution: InstitutionData,
):
    """The student zip in the bucket Alma polls, uploaded only when its blocking checks pass."""
    staff = rules.select_patrons(
        frames.column(staff_rows, "KRB_NAME_UPPERCASE"), duplicate_reason=rules.DROPPED_DUPLICATE_STAFF
    )
    staff_identifiers = rules.claimed_identifiers(frames.records(staff_rows, keep=staff.kept))
    students = frames.records(deduplicated_students)
    yield from _publish(
        context,
        config,
        STUDENT,
        students,
        len(deduplicated_students),
        Counter(),
        bucket,
        institution,
        staff_identifiers,
    )


def _previous_patrons(
    context: dg.AssetExecutionContext, bucket: Bucket, patron_type: PatronType
) -> tuple[int | None, str]:
    """The patron count of this type's last successful load, and where it was found: this
    instance's last materialization, else the count recorded in the newest zips in the bucket
    (so a new or wiped instance still compares with what Alma last received)."""
    event = context.instance.get_latest_materialization_event(context.asset_key)
    entry = (
        event.asset_materialization.metadata.get("patrons") if event and event.asset_materialization else None
    )
    if entry is not None:
        return int(entry.value), "this instance's last load"
    keys = latest_set(bucket.list_keys(), bucket.prefix, patron_type.name)
    counts = [patrons_in_zip_tail(bucket.tail(key)) for key in keys]
    if keys and None not in counts:
        return sum(counts), f"the bucket's newest {patron_type.name} zips"
    return None, "none"


def _publish(
    context: dg.AssetExecutionContext,
    config: ZipConfig,
    patron_type: PatronType,
    rows: Iterable[dict],
    patrons: int,
    left_out: Counter,
    bucket: Bucket,
    institution: InstitutionData,
    taken_identifiers: Set[str] = frozenset(),
):
    """Build a type's zips, check them, upload them, then (and only then) remove older zips."""
    moment = dt.datetime.now(dt.UTC).replace(microsecond=0)
    scratch = storage.scratch_folder(context.instance, context.run.run_id, patron_type.name)
    try:
        result, screening, outcomes = _build_and_check(
            context,
            config,
            patron_type,
            rows,
            patrons,
            bucket,
            institution,
            taken_identifiers,
            moment,
            scratch,
        )
        for outcome in outcomes:
            yield dg.AssetCheckResult(
                check_name=outcome.name,
                passed=outcome.passed,
                severity=dg.AssetCheckSeverity.ERROR if outcome.blocking else dg.AssetCheckSeverity.WARN,
                description=outcome.description,
                metadata=outcome.metadata,
            )
        if screening is not None and screening.left_out:
            _report_invalid_users(context, patron_type, screening)
        blocked = [outcome for outcome in outcomes if outcome.blocking and not outcome.passed]
        if blocked:
            reasons = "; ".join(f"{outcome.name} check failed: {outcome.description}" for outcome in blocked)
            context.log.error(f"{patron_type.name} zip not uploaded, the previous one stays: {reasons}")
            raise dg.Failure(description=f"{patron_type.name} zip held back: {reasons}")
        if config.allow_shrink:
            [shrink] = [outcome for outcome in outcomes if outcome.name == checks.SHRINK]
            context.log.warning(f"allow_shrink set for this run: {shrink.description}")
        zips = screening.zips
        keys = []
        for packaged in zips:
            key = object_key(bucket.prefix, packaged.name)
            bucket.upload(packaged.path, key)
            keys.append(key)
            context.log.info(
                f"uploaded {key} ({packaged.size} bytes, {packaged.patrons} {patron_type.name} patrons)"
            )
        sizes = [packaged.size for packaged in zips]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # Two loads at once (the schedule and a command-line run): each removes only older zips, and the
    # older one, finding a newer load in place, removes its own: the newest load stays, alone.
    existing = bucket.list_keys()
    newer = newer_keys(existing, bucket.prefix, patron_type.name, uploaded=moment)
    stale = (
        keys if newer else stale_keys(existing, bucket.prefix, patron_type.name, keep=keys, uploaded=moment)
    )
    bucket.delete(stale)
    if newer:
        context.log.warning(
            f"a newer {patron_type.name} load ({', '.join(newer)}) is in the bucket: removed this run's zips"
        )
    elif stale:
        context.log.info(f"removed {len(stale)} older {patron_type.name} zip(s): {', '.join(stale)}")
    loaded = sum(packaged.patrons for packaged in zips)
    invalid = Counter({checks.LEFT_OUT_INVALID: len(screening.left_out)}) if screening.left_out else Counter()
    counts = left_out + result.counts + invalid
    unknown = sorted(result.unknown_departments)
    context.log.info(
        f"{loaded} {patron_type.name} patrons; left out: {_describe(left_out + invalid)}; "
        f"other counts: {_describe(result.counts)}; unknown department codes: {', '.join(unknown) or 'none'}"
    )
    yield dg.MaterializeResult(
        metadata={
            "keys": keys,
            "key": dg.MetadataValue.path(keys[0]) if len(keys) == 1 else ", ".join(keys),
            "location": dg.MetadataValue.url(bucket.url(keys[0])) if keys else "",
            "zip_bytes": sum(sizes),
            "zips": len(keys),
            "xml_files": sum(len(packaged.xml_files) for packaged in zips),
            "patrons": loaded,
            **_counts(
                counts, (*(rules.STAFF_LEFT_OUT if patron_type is STAFF else ()), checks.LEFT_OUT_INVALID)
            ),
            "unknown_department_codes": unknown,
            "unknown_department_rows": sum(result.unknown_departments.values()),
            "stale_zips_removed": [] if newer else stale,
            "superseded_by": newer,
        }
    )


def _build_and_check(
    context, config, patron_type, rows, patrons, bucket, institution, taken_identifiers, moment, scratch
):
    """The type's zips in ``scratch``, and every check's outcome (blocking ones first)."""
    limits = institution.limits()
    try:
        result = build_zips(
            rows, patrons, patron_type, institution.load(), moment, scratch, limits, taken_identifiers
        )
    except PackagingError as refusal:
        return None, None, [checks.check_limits([], limits, refused=str(refusal))]
    screening = checks.screen_users(
        result.zips,
        checks.user_schemas(institution.alma_user_xsd),
        taken_identifiers,
        config.max_invalid_share,
    )
    loaded = sum(packaged.patrons for packaged in screening.zips)
    outcomes = [
        checks.check_limits(screening.zips, limits),
        screening.outcome,
        checks.check_shrink(
            patron_type.name,
            loaded,
            *_previous_patrons(context, bucket, patron_type),
            config.max_drop_share,
            config.allow_shrink,
        ),
        *checks.informational(patron_type.name, result.counts, result.unknown_departments),
    ]
    return result, screening, outcomes


def _report_invalid_users(context: dg.AssetExecutionContext, patron_type: PatronType, screening) -> None:
    """Invalid users by primary id, for the run report only: metadata and logs keep counts."""
    invalid = screening.left_out
    storage.write_report_file(
        context.instance,
        context.run.run_id,
        f"{patron_type.name}_invalid_users.csv",
        ("primary_id", "xml_file", "position", "reasons"),
        ((user.primary_id, user.xml_file, user.position, " | ".join(user.reasons)) for user in invalid),
    )
    what = "left out of the file" if screening.outcome.passed else "found; the type is held back"
    context.log.warning(
        f"{len(invalid)} invalid {patron_type.name} user(s) {what}; the run report names them"
    )


def _counts(counter: Counter, always: tuple[str, ...] = ()) -> dict[str, int]:
    """Counts by reason; the reasons in ``always`` shown even at zero."""
    return {name: int(counter[name]) for name in sorted({*always, *counter})}


def _describe(counter: Counter) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items()) if count) or "none"
