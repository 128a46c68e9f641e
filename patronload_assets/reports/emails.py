"""The run report emails: plain functions from what a run recorded to a message (docs/patron-rules.md §10)."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ..domain import alma_jobs

# Metadata entries of the zip assets summarised at the top of a report, in this order.
SUMMARY_COUNTS = ("patrons", "zips", "zip_bytes")
NOT_LISTED = (*SUMMARY_COUNTS, "rows", "columns", "rows_read", "stored_bytes")
CHANGE_KINDS = ("new", "departed", "changed", "unchanged")  # patrons_{kind} in a zip asset's metadata
CHANGE_PREFIXES = ("patrons_", "changed_")  # the "Changes since the last load" section lists these
ATTACH_PLAIN_BYTES = 2 << 20  # a longer CSV (a term's worth of new students) is attached gzipped


@dataclass
class RunFacts:
    """What a report says about one run; counts, codes, keys and log lines, never patron data."""

    run_id: str
    job_name: str
    started: dt.datetime
    log_lines: list[str]
    assets: dict[str, Mapping[str, object]] = field(default_factory=dict)  # asset -> metadata
    failed_steps: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # CSV files the run left for its report (users left out, changes, by primary id): attached, never logged.
    files: dict[str, str] = field(default_factory=dict)  # name -> text
    preview: bool = False  # a dry run: what a load would send; nothing was sent
    retrying: bool = False  # a failed run the deployment will retry by itself
    retry_lines: list[str] = field(default_factory=list)  # what happens next, or the tries before


def subject(
    workspace: str,
    run_date: dt.date,
    failed: bool = False,
    overdue: bool = False,
    preview: bool = False,
    retrying: bool = False,
) -> str:
    text = f"{workspace.upper()} Patronload file creation {run_date.isoformat()}"
    text = f"{text} preview" if preview else text
    if failed:
        return f"{text} failed, retrying" if retrying else f"{text} failed"
    return f"{text} overdue" if overdue else text


def summary_lines(assets: Mapping[str, Mapping[str, object]]) -> list[str]:
    """Patrons per type, left out and repaired by reason, unknown codes, keys and sizes."""
    lines = []
    for asset, metadata in sorted(assets.items()):
        if asset.endswith("_zip"):
            patrons, zips, size = (metadata.get(name, 0) for name in SUMMARY_COUNTS)
            lines.append(f"{asset}: {patrons} patrons in {zips} zip(s), {size} bytes")
            for key in metadata.get("keys") or []:
                lines.append(f"  key: {key}")
            unknown = metadata.get("unknown_department_codes") or []
            lines.append(f"  unknown department codes: {', '.join(unknown) if unknown else 'none'}")
        elif asset.endswith("_rows") or asset == "deduplicated_students":
            lines.append(f"{asset}: {metadata.get('rows', 0)} rows")
        else:
            continue
        for name, value in sorted(metadata.items()):
            if type(value) is int and name not in NOT_LISTED and not name.startswith(CHANGE_PREFIXES):
                lines.append(f"  {name}: {value}")
    return lines


def changes_lines(assets: Mapping[str, Mapping[str, object]], files: Mapping[str, str]) -> list[str]:
    """Per zip asset: new, departed, changed (by field group) and unchanged patrons since the last
    load (docs/patron-rules.md §11), and which attachment names them."""
    lines = []
    for asset, metadata in sorted(assets.items()):
        if not asset.endswith("_zip") or "patrons_new" not in metadata:
            continue
        previous = metadata.get("previous_load", "none")
        if str(previous).startswith("none"):
            lines.append(f"{asset}: no previous load: {metadata['patrons_new']} new")
            continue
        counts = ", ".join(f"{metadata.get(f'patrons_{kind}', 0)} {kind}" for kind in CHANGE_KINDS)
        lines.append(f"{asset}: {counts} (compared with {previous})")
        groups = [
            f"{name.removeprefix('changed_')} {value}"
            for name, value in sorted(metadata.items())
            if name.startswith("changed_") and value
        ]
        if groups:
            lines.append(f"  changed, by field group: {', '.join(groups)}")
        csv_name = f"{asset.removesuffix('_zip')}_changes.csv"
        if csv_name in files:
            lines.append(f"  by primary id: the attached {_attachment_name(csv_name, files[csv_name])}")
    return ["Changes since the last load:", *lines, ""] if lines else []


def left_out_lines(files: Mapping[str, str], most: int = 50) -> list[str]:
    """The users left out as invalid, by primary id and reason, from the run's CSV files."""
    lines = []
    for name, text in sorted(files.items()):
        if not name.endswith("_invalid_users.csv"):
            continue
        rows = list(csv.DictReader(io.StringIO(text)))
        lines.append(f"{name.removesuffix('_invalid_users.csv')}: {len(rows)} user(s) left out as invalid")
        lines += [f"  {row['primary_id']}: {row['reasons']}" for row in rows[:most]]
        if len(rows) > most:
            lines.append(f"  ... {len(rows) - most} more in the attached {name}")
    return (
        ["Users left out of the files (Alma keeps their accounts as they were):", *lines, ""] if lines else []
    )


def preview_lines(assets: Mapping[str, Mapping[str, object]]) -> list[str]:
    """What a preview found a load now would do: upload each type, or hold it back and why."""
    lines = ["PREVIEW: nothing was uploaded or deleted. A load now would:"]
    for asset, metadata in sorted(assets.items()):
        if asset.endswith("_zip"):
            held_back = metadata.get("held_back")
            verdict = f"hold it back: {held_back}" if held_back else "upload it"
            lines.append(f"  {asset}: {metadata.get('patrons', 0)} patrons; {verdict}")
    return [*lines, ""]


def success_message(facts: RunFacts, workspace: str, sender: str, recipients: Sequence[str]) -> EmailMessage:
    body = [
        f"Patronload {'preview ' if facts.preview else ''}run {facts.run_id} ({facts.job_name}) succeeded.",
        *facts.retry_lines,
        "",
        *(preview_lines(facts.assets) if facts.preview else []),
        *summary_lines(facts.assets),
        "",
        *changes_lines(facts.assets, facts.files),
        *left_out_lines(facts.files),
        "Log (INFO and above):",
        *facts.log_lines,
    ]
    subject_text = subject(workspace, facts.started.date(), preview=facts.preview)
    return compose(subject_text, body, sender, recipients, facts.files)


def failure_message(
    facts: RunFacts, workspace: str, sender: str, recipients: Sequence[str], last_lines: int = 30
) -> EmailMessage:
    steps = ", ".join(facts.failed_steps) or "the run itself (before any step)"
    body = [
        f"Patronload run {facts.run_id} ({facts.job_name}) FAILED.",
        f"Failed step(s): {steps}",
        "",
        "Error:",
        *(facts.errors or ["(no error was recorded)"]),
        "",
        "No zip of a failed type was replaced: the previous one stays in the bucket.",
        *facts.retry_lines,
        "",
        *summary_lines(facts.assets),
        "",
        *changes_lines(facts.assets, facts.files),
        *left_out_lines(facts.files),
        f"Last {last_lines} log lines:",
        *facts.log_lines[-last_lines:],
    ]
    subject_text = subject(
        workspace, facts.started.date(), failed=True, preview=facts.preview, retrying=facts.retrying
    )
    return compose(subject_text, body, sender, recipients, facts.files)


def overdue_message(
    load_date: dt.date, lines: Sequence[str], workspace: str, sender: str, recipients: Sequence[str]
) -> EmailMessage:
    """A load that had not succeeded by its deadline (``lines`` say what is known)."""
    return compose(subject(workspace, load_date, overdue=True), lines, sender, recipients)


def alma_job_message(
    facts: Mapping[str, object],
    files: Mapping[str, str],
    workspace: str,
    sender: str,
    recipients: Sequence[str],
) -> EmailMessage:
    """Alma's verdict on a load (docs/patron-rules.md §12): the SIS job run's status, its counts and
    the users it rejected (attached by primary id); or that no run picked the files up in time."""
    load_date = dt.date.fromisoformat(str(facts["load_date"]))
    text = f"{workspace.upper()} Patronload Alma job {load_date.isoformat()}"
    if facts["kind"] == "not_picked_up":
        body = [
            f"No run of Alma's SIS synchronize job picked up and finished the load uploaded "
            f"{facts['uploaded']} within {facts['wait_hours']:g} hours.",
            "",
            "The files sit in the bucket unprocessed: check that the integration profile is active and its "
            "schedule runs, and that it reads the bucket and prefix the load writes to.",
        ]
        if facts.get("following"):
            body.append(f"Job run {facts['following']} had started and had not ended.")
        if facts.get("last_error"):
            body.append(f"The last call to Alma's API failed: {facts['last_error']}")
        return compose(f"{text} not picked up", body, sender, recipients)
    rows = list(csv.DictReader(io.StringIO(files.get("alma_rejected_users.csv", ""))))
    counts = [
        f"  users {name}: {facts.get(f'alma_users_{name}', 0)}"
        for name in ("created", "updated", "unchanged", "rejected")
    ]
    others = [
        f"  {name.removeprefix('alma_')}: {value}"
        for name, value in sorted(facts.items())
        if name.startswith("alma_")
        and not name.startswith(("alma_users_", "alma_job_"))
        and type(value) is int
    ]
    status = str(facts.get("alma_job_status") or "")
    alerts = list(facts.get("alerts") or [])
    body = [
        f"Alma's SIS synchronize job run {facts.get('alma_job_instance_id')} for the load of {load_date}: "
        f"{status}.",
        f"Submitted {facts.get('alma_job_submitted') or 'unknown'}, "
        f"ended {facts.get('alma_job_ended') or 'unknown'}.",
        *(["", "Alma's alerts on the run:", *(f"  {alert}" for alert in alerts)] if alerts else []),
        "",
        *counts,
        *others,
        "",
    ]
    if rows:
        body.append(
            f"Users Alma rejected ({len(rows)}): they keep their accounts as they were, or have none."
        )
        body += [
            f"  {row['primary_id']}: {row['reason']}"
            if row.get("primary_id")
            else f"  (no user of this load) {row.get('values') or row['reason']}"
            for row in rows[:50]
        ]
        if len(rows) > 50:
            body.append(f"  ... {len(rows) - 50} more in the attached alma_rejected_users.csv")
    # Anything but a clean success says so where it is seen first.
    subject_text = text if status == alma_jobs.SUCCESS else f"{text} {status or 'status unknown'}"
    return compose(subject_text, body, sender, recipients, files if rows else None)


def compose(
    subject_text: str,
    body: Iterable[str],
    sender: str,
    recipients: Sequence[str],
    attachments: Mapping[str, str] | None = None,
) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject_text
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="patronload")
    message.set_content("\n".join(body) + "\n")
    for name, text in sorted((attachments or {}).items()):
        data, filename = text.encode("utf-8"), _attachment_name(name, text)
        if filename != name:
            message.add_attachment(
                gzip.compress(data, mtime=0), maintype="application", subtype="gzip", filename=filename
            )
        else:
            message.add_attachment(data, maintype="text", subtype="csv", filename=name)
    return message


def _attachment_name(name: str, text: str) -> str:
    """The file name a CSV is attached under: gzipped (``.gz``) past ``ATTACH_PLAIN_BYTES``."""
    return f"{name}.gz" if len(text.encode("utf-8")) > ATTACH_PLAIN_BYTES else name


def error_lines(error) -> list[str]:
    """An error and its causes, innermost last: the cause (``ORA-12541``) is what operators need."""
    lines = []
    while error is not None:
        message = (getattr(error, "message", None) or str(error)).strip()
        if message and message not in lines:
            lines.append(message)
        error = getattr(error, "cause", None) or getattr(error, "context", None)
    return lines
