"""The load's assets: a thin shell over the domain. Read from a resource, call the domain,
record counts, codes and keys as metadata (never a name, email, phone or address)."""

import contextlib
import datetime as dt
import signal
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Set
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from .. import configuration
from ..domain import changes, checks
from ..domain.institution import (
    DROPPED_DUPLICATE_STAFF,
    DROPPED_DUPLICATE_STUDENT,
    PatronType,
    Rules,
    Selection,
    claimed_identifiers,
    select_patrons,
)
from ..domain.load import BuildResult, build_zips
from ..domain.packaging import (
    PackagingError,
    latest_set,
    newer_keys,
    newest_load_time,
    object_key,
    stale_keys,
)
from ..domain.values import person_keys
from ..resources import faults
from ..resources.bucket import Bucket
from ..resources.institution import InstitutionData
from ..resources.warehouse import Warehouse
from ..state import frames, scratch
from ..state.store import IDENTIFYING, StateStore
from . import retries
from .timing import LOAD_TIMING, ZIP_FRESHNESS

GROUP = "patronload"
# One patronload run of an institution at a time: the instance limits each pool to one (dagster.yaml).
# In a consortium (CONSORTIUM set) each institution's keys, pool and runs are its own.
KEY_PREFIX = configuration.KEY_PREFIX
POOL = "_".join(["patronload", *KEY_PREFIX])
INSTITUTION_TAG = "patronload/institution"
OWN_TAGS = {INSTITUTION_TAG: KEY_PREFIX[0]} if KEY_PREFIX else {}  # every job's runs say whose they are


def asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([*KEY_PREFIX, name])


def own_run(run: dg.DagsterRun) -> bool:
    """Not another institution's run: a consortium's jobs tag their runs by institution (a run of
    selected assets, from the command line, is told by its asset keys)."""
    tag = run.tags.get(INSTITUTION_TAG)
    return tag is None or tag == OWN_TAGS.get(INSTITUTION_TAG)


def _ins(*names: str, **metadata: dict) -> dict[str, dg.AssetIn]:
    """The inputs by name, under the same key prefix; ``metadata`` by input name."""
    return {name: dg.AssetIn(key_prefix=KEY_PREFIX or None, metadata=metadata.get(name)) for name in names}


ZIP_ASSETS = (asset_key("staff_zip"), asset_key("student_zip"))  # what reaches Alma
# An upload still open after this long belongs to a killed run (one takes seconds to minutes).
ABANDONED_UPLOAD_AGE = dt.timedelta(hours=1)


@contextlib.contextmanager
def load_step(context: dg.OpExecutionContext) -> Iterator[None]:
    """Every step of the load: a retry's first step waits for its start time; a step that fails for
    a reason that will not pass by waiting keeps its run from being retried (retries.py)."""
    retries.pause_before_retry(context, LOAD_TIMING.retry_minutes)
    try:
        yield
    except Exception as error:
        retries.not_retried_if_permanent(context, error)
        raise


def read_view(log, warehouse: Warehouse, rules: Rules, patron_type: PatronType) -> tuple[pd.DataFrame, dict]:
    """A view's rows, every column text, and their metadata (rows, columns, repairs by kind)."""
    frame, repairs = warehouse.extract(rules, patron_type.name, log)
    missing = [column for column in patron_type.columns if column not in frame.columns]
    if missing:
        raise ValueError(f"the {patron_type.name} query returned no {', '.join(missing)} column")
    frame = frame[list(patron_type.columns)]
    log.info(f"{len(frame)} {patron_type.name} rows read from the {warehouse.describe()}")
    return frame, {"rows": len(frame), "columns": len(frame.columns), **_counts(repairs)}


@dg.asset(group_name=GROUP, key_prefix=KEY_PREFIX or None, pool=POOL, kinds={"sql", "pandas"})
def staff_rows(
    context: dg.AssetExecutionContext, warehouse: Warehouse, institution: InstitutionData
) -> dg.Output[pd.DataFrame]:
    """The staff extract (sql/<institution>/staff.sql), every column text."""
    with load_step(context):
        rules = institution.rules()
        return _output(read_view(context.log, warehouse, rules, rules.staff))


@dg.asset(group_name=GROUP, key_prefix=KEY_PREFIX or None, pool=POOL, kinds={"sql", "pandas"})
def student_rows(
    context: dg.AssetExecutionContext, warehouse: Warehouse, institution: InstitutionData
) -> dg.Output[pd.DataFrame]:
    """The student extract (sql/<institution>/student.sql), every column text."""
    with load_step(context):
        rules = institution.rules()
        return _output(read_view(context.log, warehouse, rules, rules.student))


@dg.asset(
    group_name=GROUP,
    key_prefix=KEY_PREFIX or None,
    pool=POOL,
    kinds={"pandas"},
    ins=_ins("staff_rows", "student_rows"),
)
def deduplicated_students(
    context: dg.AssetExecutionContext,
    staff_rows: pd.DataFrame,
    student_rows: pd.DataFrame,
    institution: InstitutionData,
) -> dg.Output[pd.DataFrame]:
    """Students whose person key (MIT: Kerberos name) is not already staff, one row each (first wins)."""
    with load_step(context):
        return _output(deduplicate_students(context.log, institution.rules(), staff_rows, student_rows))


def deduplicate_students(
    log, rules: Rules, staff_rows: pd.DataFrame, student_rows: pd.DataFrame
) -> tuple[pd.DataFrame, dict]:
    selection = select_patrons(
        frames.column(student_rows, rules.person_key),
        rules,
        already_loaded=person_keys(frames.column(staff_rows, rules.person_key)),
        duplicate_reason=DROPPED_DUPLICATE_STUDENT,
    )
    students = student_rows.iloc[selection.kept].reset_index(drop=True)
    log.info(
        f"{len(students)} of {len(student_rows)} student rows kept; left out: {_describe(selection.left_out)}"
    )
    metadata = {
        "rows": len(students),
        "rows_read": len(student_rows),
        **_counts(selection.left_out, rules.left_out_reasons(rules.student)),
    }
    return students, metadata


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
    allow_departures: bool = Field(
        default=False,
        description="Upload even if more than max_departed_share of the last load's patrons departed. "
        "A deliberate one-run override, logged: check the people really left first.",
    )
    max_departed_share: float = Field(
        default=changes.MAX_DEPARTED_SHARE,
        ge=0,
        le=1,
        description="The largest share of the last load's patrons absent from this one that uploads "
        "without override (a view pointed at other people keeps the count, not the people).",
    )
    max_invalid_share: float = Field(
        default=checks.MAX_INVALID_SHARE,
        ge=0,
        le=1,
        description="Users failing the schema check are left out of the file and named in the run report; "
        "more than this share of the type's users is a systemic fault that holds the type back.",
    )


def _check_specs(asset_name: str, patron_type: str) -> list[dg.AssetCheckSpec]:
    names = [
        checks.SCHEMA,
        checks.SHRINK,
        checks.DEPARTURES,
        checks.LIMITS,
        checks.UNKNOWN_DEPARTMENTS,
        checks.REPAIRS,
    ]
    if patron_type == "student":
        names.append(checks.USER_GROUPS)
    return [
        dg.AssetCheckSpec(
            name,
            asset=asset_key(asset_name),
            blocking=name in checks.BLOCKING,
            description=CHECK_DESCRIPTIONS[name],
        )
        for name in names
    ]


def _zip_asset(asset_name: str, patron_type: str) -> dict:
    """What both zip assets declare: group, the one-run pool, kinds, checks, freshness."""
    return {
        "group_name": GROUP,
        "key_prefix": KEY_PREFIX or None,
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
    checks.DEPARTURES: "No more than max_departed_share of the last load's patrons absent from this one "
    "(by primary id). Blocks the upload.",
    checks.LIMITS: "Alma's limits: 4 GB a zip, 50 XML files a zip, 20 zips a load. Blocks the upload.",
    checks.UNKNOWN_DEPARTMENTS: "Department codes the institution's table does not know (warning).",
    checks.REPAIRS: "Values repaired on the way: control characters, non-text values, cut lengths (warning).",
    checks.USER_GROUPS: "Students the rules give no user group (warning).",
}


@dg.asset(**_zip_asset("staff_zip", "staff"), ins=_ins("staff_rows"))
def staff_zip(
    context: dg.AssetExecutionContext,
    config: ZipConfig,
    staff_rows: pd.DataFrame,
    bucket: Bucket,
    institution: InstitutionData,
    state: StateStore,
):
    """The staff zip in the bucket Alma polls, uploaded only when its blocking checks pass."""
    with load_step(context):
        load = LoadInput.staff(staff_rows, institution.rules())
        yield from _publish(context, config, load, bucket, institution, state)


@dg.asset(
    **_zip_asset("student_zip", "student"),
    # The staff file's identifiers are not the students' to take: only who each row is is read.
    ins=_ins("deduplicated_students", "staff_rows", staff_rows={"columns": IDENTIFYING}),
)
def student_zip(
    context: dg.AssetExecutionContext,
    config: ZipConfig,
    deduplicated_students: pd.DataFrame,
    staff_rows: pd.DataFrame,
    bucket: Bucket,
    institution: InstitutionData,
    state: StateStore,
):
    """The student zip in the bucket Alma polls, uploaded only when its blocking checks pass."""
    with load_step(context):
        load = LoadInput.students(deduplicated_students, staff_rows, institution.rules())
        yield from _publish(context, config, load, bucket, institution, state)


@dataclass
class LoadInput:
    """One type's selected rows, as its zip asset (or the preview) builds them."""

    patron_type: PatronType
    rows: Iterable[dict]
    patrons: int
    left_out: Counter
    left_out_reasons: tuple[str, ...] = ()  # shown in the metadata even at zero
    taken_identifiers: Set[str] = frozenset()  # the other file's (staff's, for students)

    @classmethod
    def staff(cls, staff_rows: pd.DataFrame, rules: Rules) -> "LoadInput":
        selection = _select_staff(staff_rows, rules)
        staff = frames.records(staff_rows, keep=selection.kept)  # the kept rows, without a copy
        reasons = rules.left_out_reasons(rules.staff)
        return cls(rules.staff, staff, len(selection.kept), selection.left_out, reasons)

    @classmethod
    def students(
        cls, deduplicated_students: pd.DataFrame, staff_rows: pd.DataFrame, rules: Rules
    ) -> "LoadInput":
        staff = frames.records(staff_rows, keep=_select_staff(staff_rows, rules).kept)
        students = frames.records(deduplicated_students)
        taken = claimed_identifiers(staff, rules)
        return cls(rules.student, students, len(deduplicated_students), Counter(), (), taken)


def _select_staff(staff_rows: pd.DataFrame, rules: Rules) -> Selection:
    return select_patrons(
        frames.column(staff_rows, rules.person_key), rules, duplicate_reason=DROPPED_DUPLICATE_STAFF
    )


def _baseline(
    state: StateStore, log, bucket: Bucket, patron_type: PatronType
) -> tuple[changes.Baseline | None, str]:
    """The last successful load of the type to compare with, and where it was found: the
    deployment's baseline (its state store), unless the bucket holds a newer load (another
    deployment's) or there is none (new, or wiped): then the bucket's newest zips, read back
    (docs/patron-rules.md §11)."""
    stored = state.read_baseline(patron_type.name)
    existing = bucket.list_keys()
    newest = newest_load_time(existing, bucket.prefix, patron_type.name)
    if stored is not None and (newest is None or stored.load_time >= newest):
        return stored, f"the last load ({stored.load_time:%Y-%m-%d %H:%M:%S} UTC)"
    keys = latest_set(existing, bucket.prefix, patron_type.name)
    if not keys:
        return None, "none"
    fingerprints = changes.Fingerprints()
    try:
        for key in keys:
            with bucket.local_file(key) as path:
                if path is None:
                    raise FileNotFoundError(f"{key} is gone")
                with zipfile.ZipFile(path) as archive:
                    for name in sorted(name for name in archive.namelist() if name.endswith(".xml")):
                        for key_element, digests in changes.fingerprints_of_document(archive.read(name)):
                            fingerprints.add(key_element, digests)
    except (OSError, zipfile.BadZipFile) as error:
        log.warning(f"the bucket's newest {patron_type.name} zips could not be read back ({error}): "
                    "nothing to compare with")  # fmt: skip
        return None, f"none (the bucket's newest {patron_type.name} zips could not be read)"
    log.info(f"compared with the bucket's newest {patron_type.name} zips: {', '.join(keys)}")
    return changes.Baseline(fingerprints, newest, keys), f"the bucket's newest {patron_type.name} zips"


@dataclass
class Prepared:
    """A type's zips built and checked, and how they compare with the last load: not yet sent."""

    patron_type: PatronType
    outcomes: list[checks.Outcome]  # every check's outcome, blocking ones first
    result: BuildResult | None = None  # None: refused before anything was written
    screening: checks.Screening | None = None
    comparison: changes.Comparison | None = None
    fingerprints: changes.Fingerprints = field(default_factory=changes.Fingerprints)

    @property
    def blocked(self) -> list[checks.Outcome]:
        return [outcome for outcome in self.outcomes if outcome.blocking and not outcome.passed]

    def describe_blocked(self) -> str:
        return "; ".join(f"{outcome.name} check failed: {outcome.description}" for outcome in self.blocked)


def prepare(
    context: dg.OpExecutionContext,
    config: ZipConfig,
    load: LoadInput,
    bucket: Bucket,
    institution: InstitutionData,
    state: StateStore,
    moment: dt.datetime,
    scratch: Path,
) -> Prepared:
    """Build a type's zips in ``scratch``, check them and compare them with the last load, as
    the zip asset does before it uploads and the preview does instead of uploading. The report
    files (users left out, changes) are written for the run report."""
    patron_type, limits = load.patron_type, institution.limits()
    try:
        result = build_zips(
            load.rows,
            load.patrons,
            patron_type,
            institution.load(),
            moment,
            scratch,
            limits,
            load.taken_identifiers,
        )
    except PackagingError as refusal:
        return Prepared(patron_type, [checks.check_limits([], limits, refused=str(refusal))])
    screening = checks.screen_users(
        result.zips,
        checks.user_schemas(institution.alma_user_xsd),
        load.taken_identifiers,
        config.max_invalid_share,
    )
    fingerprints = result.fingerprints.without(screening.left_out_indices)
    baseline, previous_from = _baseline(state, context.log, bucket, patron_type)
    comparison = changes.compare(baseline.fingerprints if baseline else None, fingerprints, previous_from)
    context.log.info(f"{patron_type.name}: {comparison.describe()}")
    loaded = sum(packaged.patrons for packaged in screening.zips)
    outcomes = [
        checks.check_limits(screening.zips, limits),
        screening.outcome,
        checks.check_shrink(
            patron_type.name,
            loaded,
            len(baseline.fingerprints) if baseline else None,  # the last load's count: one source
            previous_from,
            config.max_drop_share,
            config.allow_shrink,
        ),
        checks.check_departures(
            patron_type.name, comparison, config.max_departed_share, config.allow_departures
        ),
        *checks.informational(patron_type.name, result.counts, result.unknown_departments),
    ]
    prepared = Prepared(patron_type, outcomes, result, screening, comparison, fingerprints)
    _write_report_files(context, state, prepared)
    expired = state.remove_expired_reports()
    if expired:
        context.log.info(
            f"removed {len(expired)} report file(s) older than {state.report_retention_days} days"
        )
    return prepared


def _publish(
    context: dg.AssetExecutionContext,
    config: ZipConfig,
    load: LoadInput,
    bucket: Bucket,
    institution: InstitutionData,
    state: StateStore,
):
    """Build a type's zips, check them, upload them, then (and only then) remove older zips and
    keep the load as the next one's baseline."""
    patron_type = load.patron_type
    moment = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with scratch.scratch(context.instance, context.run.run_id, patron_type.name) as folder:
        prepared = prepare(context, config, load, bucket, institution, state, moment, folder)
        for outcome in prepared.outcomes:
            yield dg.AssetCheckResult(
                check_name=outcome.name,
                passed=outcome.passed,
                severity=dg.AssetCheckSeverity.ERROR if outcome.blocking else dg.AssetCheckSeverity.WARN,
                description=outcome.description,
                metadata=outcome.metadata,
            )
        if prepared.blocked:
            reasons = prepared.describe_blocked()
            context.log.error(f"{patron_type.name} zip not uploaded, the previous one stays: {reasons}")
            raise dg.Failure(description=f"{patron_type.name} zip held back: {reasons}")
        for name, allowed in (
            (checks.SHRINK, config.allow_shrink),
            (checks.DEPARTURES, config.allow_departures),
        ):
            if allowed:
                [outcome] = [outcome for outcome in prepared.outcomes if outcome.name == name]
                context.log.warning(f"allow_{name} set for this run: {outcome.description}")
        zips = prepared.screening.zips
        # Uploads a killed run left open are aborted (a failed one aborts its own at once).
        abandoned = bucket.abort_uploads(
            object_key(bucket.prefix, f"{patron_type.name}_"), started_before=moment - ABANDONED_UPLOAD_AGE
        )
        if abandoned:
            context.log.info(f"aborted {abandoned} {patron_type.name} upload(s) a killed run left open")
        keys, stale, newer = put_in_place(context.log, bucket, patron_type.name, zips, moment)
        sizes = [packaged.size for packaged in zips]
        uploaded_at = dt.datetime.now(dt.UTC)  # every zip of the type in place: Alma may take them
    if not newer:
        state.write_baseline(patron_type.name, changes.Baseline(prepared.fingerprints, moment, keys))
    yield dg.MaterializeResult(
        metadata={
            "keys": keys,
            "key": dg.MetadataValue.path(keys[0]) if len(keys) == 1 else ", ".join(keys),
            "location": dg.MetadataValue.url(bucket.url(keys[0])) if keys else "",
            "zip_bytes": sum(sizes),
            "zips": len(keys),
            "xml_files": sum(len(packaged.xml_files) for packaged in zips),
            "uploaded_at": uploaded_at.isoformat(),
            **load_metadata(context.log, load, prepared),
            "stale_zips_removed": [] if newer else stale,
            "superseded_by": newer,
        }
    )


def put_in_place(
    log, bucket: Bucket, patron_type: str, zips: list, moment: dt.datetime
) -> tuple[list[str], list[str], list[str]]:
    """Upload a type's zips, then remove its older ones: the bucket holds the previous set or the
    new one whole, never part of one. A failure while uploading (or SIGTERM, which Dagster raises in
    the step) removes what this run uploaded; once every zip is in place an interruption still
    finishes the switch. The keys uploaded, the older keys removed, and any newer load's keys."""
    keys: list[str] = []
    with _sigterm_raises():
        return _upload_and_switch(log, bucket, patron_type, zips, moment, keys)


class Terminated(BaseException):
    """SIGTERM (ECS stopping the task, 30 s before SIGKILL) while a set of zips is being put in place."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raised as :class:`Terminated` in this step's main thread, so that the clean-up below
    runs: a step process otherwise dies at once, leaving part of a new set beside the previous one."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: Dagster's own handling applies
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum, frame):
    raise Terminated("SIGTERM while putting the zips in place")


def _upload_and_switch(log, bucket, patron_type, zips, moment, keys):
    try:
        for packaged in zips:
            key = object_key(bucket.prefix, packaged.name)
            keys.append(key)  # before the upload: one that landed as it failed is removed too
            bucket.upload(packaged.path, key)
            log.info(f"uploaded {key} ({packaged.size} bytes, {packaged.patrons} {patron_type} patrons)")
    except BaseException:
        try:
            bucket.delete(keys)
            log.error(
                f"{patron_type} upload failed: removed this run's {len(keys)} key(s); the previous zips stay"
            )
        except Exception as error:
            log.error(
                f"{patron_type} upload failed and this run's keys ({', '.join(keys)}) could not be removed "
                f"({faults.short(error)}): the next load removes them"
            )
        raise
    try:
        return keys, *_switch(log, bucket, patron_type, keys, moment)
    except Exception:
        log.error(
            f"the new {patron_type} zips are in place but the older ones could not be listed or removed: "
            "until the next load (the automatic retry) removes them, both are in the bucket"
        )
        raise
    except BaseException:  # interrupted: the set is whole, so finish the switch before stopping
        _switch(log, bucket, patron_type, keys, moment)
        raise


def _switch(
    log, bucket: Bucket, patron_type: str, keys: list[str], moment: dt.datetime
) -> tuple[list[str], list[str]]:
    # Two loads at once (the schedule and a command-line run): each removes only older zips, and the
    # older one, finding a newer load in place, removes its own: the newest load stays, alone.
    existing = bucket.list_keys()
    newer = newer_keys(existing, bucket.prefix, patron_type, uploaded=moment)
    stale = keys if newer else stale_keys(existing, bucket.prefix, patron_type, keep=keys, uploaded=moment)
    bucket.delete(stale)
    if newer:
        log.warning(
            f"a newer {patron_type} load ({', '.join(newer)}) is in the bucket: removed this run's zips"
        )
    elif stale:
        log.info(f"removed {len(stale)} older {patron_type} zip(s): {', '.join(stale)}")
    return stale, newer


def load_metadata(log, load: LoadInput, prepared: Prepared) -> dict:
    """What a type's load counted (patrons, left out and repaired by reason, unknown codes, changes
    since the last load), logged in one line and returned as metadata."""
    patron_type, result, screening = load.patron_type, prepared.result, prepared.screening
    left_out = screening.left_out if screening else []
    loaded = sum(packaged.patrons for packaged in screening.zips) if screening else 0
    invalid = Counter({checks.LEFT_OUT_INVALID: len(left_out)}) if left_out else Counter()
    other = result.counts if result else Counter()
    unknown = sorted(result.unknown_departments) if result else []
    log.info(
        f"{loaded} {patron_type.name} patrons; left out: {_describe(load.left_out + invalid)}; "
        f"other counts: {_describe(other)}; unknown department codes: {', '.join(unknown) or 'none'}"
    )
    return {
        "patrons": loaded,
        **_counts(
            load.left_out + other + invalid,
            (*load.left_out_reasons, checks.LEFT_OUT_INVALID),
        ),
        "unknown_department_codes": unknown,
        "unknown_department_rows": sum(result.unknown_departments.values()) if result else 0,
        **(prepared.comparison.metadata() if prepared.comparison else {}),
        "previous_load": prepared.comparison.previous_from if prepared.comparison else "none",
    }


def _write_report_files(context: dg.OpExecutionContext, state: StateStore, prepared: Prepared) -> None:
    """The patrons the run report lists by primary id: metadata and logs keep counts only."""
    name, screening, comparison = prepared.patron_type.name, prepared.screening, prepared.comparison
    if screening is not None and screening.left_out:
        invalid = screening.left_out
        state.write_report_file(
            context.run.run_id,
            f"{name}_invalid_users.csv",
            ("primary_id", "xml_file", "position", "reasons"),
            ((user.primary_id, user.xml_file, user.position, " | ".join(user.reasons)) for user in invalid),
        )
        what = "left out of the file" if screening.outcome.passed else "found; the type is held back"
        context.log.warning(f"{len(invalid)} invalid {name} user(s) {what}; the run report names them")
    if comparison is not None and comparison.previous is not None and len(comparison.changes):
        state.write_report_file(
            context.run.run_id,
            f"{name}_changes.csv",
            ("primary_id", "change", "groups"),
            comparison.changes.itertuples(index=False),
        )


def _output(frame_and_metadata: tuple[pd.DataFrame, dict]) -> dg.Output[pd.DataFrame]:
    frame, metadata = frame_and_metadata
    return dg.Output(frame, metadata=metadata)


def _counts(counter: Counter, always: tuple[str, ...] = ()) -> dict[str, int]:
    """Counts by reason; the reasons in ``always`` shown even at zero."""
    return {name: int(counter[name]) for name in sorted({*always, *counter})}


def _describe(counter: Counter) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items()) if count) or "none"
