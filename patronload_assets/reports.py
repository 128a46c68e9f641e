"""The run report emails: plain functions from what a run recorded to a message (docs/patron-rules.md §10)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

# Metadata entries of the zip assets summarised at the top of a report, in this order.
SUMMARY_COUNTS = ("patrons", "zips", "zip_bytes")
NOT_LISTED = (*SUMMARY_COUNTS, "rows", "columns", "rows_read", "stored_bytes")


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
    # CSV files the run left for its report (users left out, by primary id): attached, never logged.
    files: dict[str, str] = field(default_factory=dict)  # name -> text


def subject(workspace: str, run_date: dt.date, failed: bool = False, overdue: bool = False) -> str:
    text = f"{workspace.upper()} Patronload file creation {run_date.isoformat()}"
    return f"{text} failed" if failed else f"{text} overdue" if overdue else text


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
            if isinstance(value, int) and name not in NOT_LISTED:
                lines.append(f"  {name}: {value}")
    return lines


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


def success_message(facts: RunFacts, workspace: str, sender: str, recipients: Sequence[str]) -> EmailMessage:
    body = [
        f"Patronload run {facts.run_id} ({facts.job_name}) succeeded.",
        "",
        *summary_lines(facts.assets),
        "",
        *left_out_lines(facts.files),
        "Log (INFO and above):",
        *facts.log_lines,
    ]
    return _message(subject(workspace, facts.started.date()), body, sender, recipients, facts.files)


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
        "",
        *summary_lines(facts.assets),
        "",
        *left_out_lines(facts.files),
        f"Last {last_lines} log lines:",
        *facts.log_lines[-last_lines:],
    ]
    subject_text = subject(workspace, facts.started.date(), failed=True)
    return _message(subject_text, body, sender, recipients, facts.files)


def overdue_message(
    load_date: dt.date, lines: Sequence[str], workspace: str, sender: str, recipients: Sequence[str]
) -> EmailMessage:
    """A load that had not succeeded by its deadline (``lines`` say what is known)."""
    return _message(subject(workspace, load_date, overdue=True), lines, sender, recipients)


def _message(
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
        message.add_attachment(text.encode("utf-8"), maintype="text", subtype="csv", filename=name)
    return message


def error_lines(error) -> list[str]:
    """An error and its causes, innermost last: the cause (``ORA-12541``) is what operators need."""
    lines = []
    while error is not None:
        message = (getattr(error, "message", None) or str(error)).strip()
        if message and message not in lines:
            lines.append(message)
        error = getattr(error, "cause", None) or getattr(error, "context", None)
    return lines
