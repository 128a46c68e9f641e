"""The short summary `make run` prints: what the newest run of this instance did.

DAGSTER_HOME=... python -m patronload_assets.reports.summary
"""

import sys

import dagster as dg

from ..settings import resources
from ..state.store import StateStore
from . import emails
from .sensors import run_facts


def summary(instance: dg.DagsterInstance, state: StateStore) -> tuple[bool, list[str]]:
    """Whether the newest run succeeded, and the lines that say what it loaded (or why it failed)."""
    records = instance.get_run_records(limit=1)
    if not records:
        return False, ["No run on this instance."]
    run = records[0].dagster_run
    facts = run_facts(instance, run, state)
    succeeded = run.status == dg.DagsterRunStatus.SUCCESS
    lines = [
        f"Run {run.run_id}: {run.status.value}",
        *emails.summary_lines(facts.assets),
        *emails.changes_lines(facts.assets, facts.files),
    ]
    for metadata in facts.assets.values():
        if metadata.get("location"):
            lines.append(f"zip: {metadata['location']}")
    if not succeeded:
        lines += [f"failed step(s): {', '.join(facts.failed_steps) or 'none recorded'}", *facts.errors]
    return succeeded, lines


def main() -> None:
    with (
        dg.DagsterInstance.get() as instance,
        dg.build_resources({"state": resources()["state"]}, instance=instance) as built,
    ):
        succeeded, lines = summary(instance, built.state)
    print("\n".join(lines))
    sys.exit(0 if succeeded else 1)


if __name__ == "__main__":
    main()
