import datetime as dt

import dagster as dg

from ..resources.bucket import Bucket
from ..resources.institution import InstitutionData
from ..resources.warehouse import Warehouse
from ..state import scratch
from ..state.store import StateStore
from .assets import (
    GROUP,
    OWN_TAGS,
    LoadInput,
    ZipConfig,
    asset_key,
    deduplicate_students,
    load_metadata,
    prepare,
    read_view,
)
from .retries import LOAD_RETRIES, NEVER_RETRIED

patronload_job = dg.define_asset_job(
    "patronload_job",
    selection=dg.AssetSelection.groups(GROUP),
    description="The whole load: both warehouse views to both zips in the bucket.",
    tags={**LOAD_RETRIES, **OWN_TAGS},  # a failed load is retried from its failed steps (retries.py)
)


@dg.op(
    description="Reads both views, builds, checks and compares both types exactly as a load would; "
    "uploads and deletes nothing. Each zip asset gets an observation (not a materialization) of "
    "what a load now would send, and the run report is a preview."
)
def preview_load(
    context: dg.OpExecutionContext,
    config: ZipConfig,
    warehouse: Warehouse,
    bucket: Bucket,
    institution: InstitutionData,
    state: StateStore,
) -> None:
    rules = institution.rules()
    staff_rows, _ = read_view(context.log, warehouse, rules, rules.staff)
    student_rows, _ = read_view(context.log, warehouse, rules, rules.student)
    students, _ = deduplicate_students(context.log, rules, staff_rows, student_rows)
    for load in (LoadInput.staff(staff_rows, rules), LoadInput.students(students, staff_rows, rules)):
        name = load.patron_type.name
        moment = dt.datetime.now(dt.UTC).replace(microsecond=0)
        zip_key = asset_key(f"{name}_zip")
        with scratch.scratch(context.instance, context.run.run_id, name) as folder:
            prepared = prepare(context, config, load, bucket, institution, state, moment, folder)
        held_back = prepared.describe_blocked()
        if held_back:
            context.log.warning(f"a load now would hold {name} back: {held_back}")
        checks = {outcome.name: "passed" if outcome.passed else "failed" for outcome in prepared.outcomes}
        metadata = {"preview": True, **load_metadata(context.log, load, prepared), "held_back": held_back}
        context.log_event(dg.AssetObservation(asset_key=zip_key, metadata={**metadata, "checks": checks}))


@dg.job(
    description="A dry run for the start of a term or after a change of the views: what a load now "
    "would add, depart and change, and whether a guard would hold it back. Nothing is uploaded or "
    "deleted and no baseline moves. Its config is a zip asset's (allow_departures...).",
    tags={**NEVER_RETRIED, **OWN_TAGS},
)
def patronload_preview():
    preview_load()


@dg.op(description="Connects to the warehouse and reads its version; touches nothing else.")
def connect_to_warehouse(context: dg.OpExecutionContext, warehouse: Warehouse) -> None:
    product, version = warehouse.server_version()
    context.log.info(f"Successfully connected to {product} version: {version}")


@dg.job(
    description="The operators' check of the warehouse connection (e.g. after the yearly password change).",
    tags={**NEVER_RETRIED, **OWN_TAGS},
)
def warehouse_connection_test():
    connect_to_warehouse()
