"""The run report emails: plain functions from what a run recorded to a message (docs/patron-rules.md §10)."""

from __future__ import annotations

import datetime as dt
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


def subject(workspace: str, run_date: dt.date, failed: bool = False) -> str:
    text = f"{workspace.upper()} Patronload file creation {run_date.isoformat()}"
    return f"{text} failed" if failed else text


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


def success_message(facts: RunFacts, workspace: str, sender: str, recipients: Sequence[str]) -> EmailMessage:
    body = [
        f"Patronload run {facts.run_id} ({facts.job_name}) succeeded.",
        "",
        *summary_lines(facts.assets),
        "",
        "Log (INFO and above):",
        *facts.log_lines,
    ]
    return _message(subject(workspace, facts.started.date()), body, sender, recipients)


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
        f"Last {last_lines} log lines:",
        *facts.log_lines[-last_lines:],
    ]
    return _message(subject(workspace, facts.started.date(), failed=True), body, sender, recipients)


def _message(subject_text: str, body: Iterable[str], sender: str, recipients: Sequence[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject_text
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="patronload")
    message.set_content("\n".join(body) + "\n")
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
