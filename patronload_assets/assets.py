"""The load's assets: a thin shell over the domain. Read from a resource, call the domain,
record counts, codes and keys as metadata (never a name, email, phone or address)."""

import datetime as dt
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd

from .domain import rules
from .domain.load import STAFF, STUDENT, PatronType, build_zips
from .domain.packaging import object_key, stale_keys
from .domain.values import kerberos_keys
from .resources import Bucket, InstitutionData, Warehouse, read_sql

GROUP = "patronload"


def _records(frame: pd.DataFrame) -> Iterator[dict[str, object]]:
    columns = list(frame.columns)
    for values in frame.itertuples(index=False, name=None):
        yield dict(zip(columns, values, strict=True))


def _read_view(context: dg.AssetExecutionContext, warehouse: Warehouse, patron_type: PatronType):
    frame = warehouse.read_frame(read_sql(patron_type.name))
    missing = [column for column in patron_type.columns if column not in frame.columns]
    if missing:
        raise ValueError(f"the {patron_type.name} query returned no {', '.join(missing)} column")
    frame = frame[list(patron_type.columns)]
    context.log.info(f"{len(frame)} {patron_type.name} rows read from the {warehouse.describe()}")
    return dg.Output(frame, metadata={"rows": len(frame), "columns": len(frame.columns)})


@dg.asset(group_name=GROUP, kinds={"sql", "pandas"})
def staff_rows(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.Output[pd.DataFrame]:
    """The staff extract (sql/staff.sql), every column text."""
    return _read_view(context, warehouse, STAFF)


@dg.asset(group_name=GROUP, kinds={"sql", "pandas"})
def student_rows(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.Output[pd.DataFrame]:
    """The student extract (sql/student.sql), every column text."""
    return _read_view(context, warehouse, STUDENT)


@dg.asset(group_name=GROUP, kinds={"pandas"})
def deduplicated_students(
    context: dg.AssetExecutionContext, staff_rows: pd.DataFrame, student_rows: pd.DataFrame
) -> dg.Output[pd.DataFrame]:
    """Students with a Kerberos name that is not already staff, one row each (first wins)."""
    selection = rules.select_patrons(
        student_rows["KRB_NAME_UPPERCASE"],
        already_loaded=kerberos_keys(staff_rows["KRB_NAME_UPPERCASE"]),
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


@dg.asset(group_name=GROUP, kinds={"s3", "xml"})
def staff_zip(
    context: dg.AssetExecutionContext,
    staff_rows: pd.DataFrame,
    bucket: Bucket,
    institution: InstitutionData,
) -> dg.MaterializeResult:
    """The staff zip in the bucket Alma polls."""
    selection = rules.select_patrons(
        staff_rows["KRB_NAME_UPPERCASE"], duplicate_reason=rules.DROPPED_DUPLICATE_STAFF
    )
    staff = staff_rows.iloc[selection.kept]
    return _publish(context, STAFF, staff, selection.left_out, bucket, institution)


@dg.asset(group_name=GROUP, kinds={"s3", "xml"})
def student_zip(
    context: dg.AssetExecutionContext,
    deduplicated_students: pd.DataFrame,
    bucket: Bucket,
    institution: InstitutionData,
) -> dg.MaterializeResult:
    """The student zip in the bucket Alma polls."""
    return _publish(context, STUDENT, deduplicated_students, Counter(), bucket, institution)


def _publish(
    context: dg.AssetExecutionContext,
    patron_type: PatronType,
    rows: pd.DataFrame,
    left_out: Counter,
    bucket: Bucket,
    institution: InstitutionData,
) -> dg.MaterializeResult:
    """Build a type's zips, upload them, then (and only then) remove the type's stale zips."""
    moment = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix=f"patronload-{patron_type.name}-") as scratch:
        result = build_zips(
            _records(rows), len(rows), patron_type, institution.load(), moment, Path(scratch),
            institution.limits(),
        )  # fmt: skip
        keys = []
        for packaged in result.zips:
            key = object_key(bucket.prefix, packaged.name)
            bucket.upload(packaged.path, key)
            keys.append(key)
            context.log.info(
                f"uploaded {key} ({packaged.size} bytes, {packaged.patrons} {patron_type.name} patrons)"
            )
        sizes = [packaged.size for packaged in result.zips]
    stale = stale_keys(bucket.list_keys(), bucket.prefix, patron_type.name, keep=keys)
    bucket.delete(stale)
    if stale:
        context.log.info(f"removed {len(stale)} stale {patron_type.name} zip(s): {', '.join(stale)}")
    counts = left_out + result.counts
    unknown = sorted(result.unknown_departments)
    context.log.info(
        f"{result.patrons} {patron_type.name} patrons; left out: {_describe(left_out)}; "
        f"other counts: {_describe(result.counts)}; unknown department codes: {', '.join(unknown) or 'none'}"
    )
    return dg.MaterializeResult(
        metadata={
            "keys": keys,
            "key": dg.MetadataValue.path(keys[0]) if len(keys) == 1 else ", ".join(keys),
            "location": dg.MetadataValue.url(bucket.url(keys[0])) if keys else "",
            "zip_bytes": sum(sizes),
            "zips": len(keys),
            "xml_files": sum(len(packaged.xml_files) for packaged in result.zips),
            "patrons": result.patrons,
            **_counts(counts, rules.STAFF_LEFT_OUT if patron_type is STAFF else ()),
            "unknown_department_codes": unknown,
            "unknown_department_rows": sum(result.unknown_departments.values()),
            "stale_zips_removed": stale,
        }
    )


def _counts(counter: Counter, always: tuple[str, ...] = ()) -> dict[str, int]:
    """Counts by reason; the reasons in ``always`` shown even at zero."""
    return {name: int(counter[name]) for name in sorted({*always, *counter})}


def _describe(counter: Counter) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items()) if count) or "none"
