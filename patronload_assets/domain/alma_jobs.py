"""Alma's verdict on a load: its SIS synchronize job's run, read from the Jobs API's JSON as Ex
Libris publishes it (``rest_job_instance``, ``rest_events``; docs/patron-rules.md §12). Tolerant:
Alma omits what it has nothing to say about, sends one object where a list is expected, and may
have statuses and codes nobody has published."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# A job instance is still at work in these states (code table systemJobStatus); the published
# ends follow. A status in neither (a live Alma may have more) is taken as an end.
RUNNING_STATES = frozenset({"QUEUED", "PENDING", "INITIALIZING", "RUNNING", "FINALIZING"})
ENDED_STATES = frozenset({
    "COMPLETED_SUCCESS", "COMPLETED_WARNING", "COMPLETED_FAILED", "COMPLETED_NO_BULKS", "FAILED",
    "MANUAL_HANDLING_REQUIRED", "SKIPPED", "SYSTEM_ABORTED", "USER_ABORTED",
})  # fmt: skip
SUCCESS = "COMPLETED_SUCCESS"
# The job report's counters, named by a word of their description ("Total users created
# successfully", ...).
COUNTERS = ("created", "updated", "unchanged", "rejected")
_WORD = re.compile(r"[a-z]+")
_FILLER_WORDS = ("total", "number", "of", "successfully")  # dropped from another counter's name


def value_of(item: object) -> str:
    """``{"value": "X", "desc": ...}`` or ``"X"`` as ``"X"``."""
    if isinstance(item, Mapping):
        return str(item.get("value") or "")
    return "" if item is None else str(item)


def _desc(item: object) -> str:
    if isinstance(item, Mapping):
        return str(item.get("desc") or item.get("value") or "")
    return "" if item is None else str(item)


def parse_time(text: object) -> dt.datetime | None:
    """An Alma timestamp (``2026-11-30T06:12:00.123Z``, or a date) as an aware UTC datetime."""
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


# A counter's description names its count by one of these words (checked in this order: "not
# changed" is unchanged before "changed" is updated).
COUNTER_WORDS = (
    ("unchanged", ({"unchanged"}, {"not", "changed"}, {"no", "change"}, {"no", "changes"})),
    ("rejected", ({"rejected"}, {"failed"})),
    ("created", ({"created"}, {"new"}, {"added"})),
    ("updated", ({"updated"}, {"changed"}, {"modified"})),
)


def counter_name(description: str) -> str:
    """A counter's metadata name: ``created`` for "Total users created successfully", ``unchanged``
    for "Users not changed", ...; else its description's words joined by ``_`` ("Total records
    processed" is ``records_processed``)."""
    words = _WORD.findall(description.lower())
    for name, spellings in COUNTER_WORDS:
        if any(spelling <= set(words) for spelling in spellings):
            return name
    return "_".join(word for word in words if word not in _FILLER_WORDS) or "_".join(words) or "unnamed"


def one_line(value: object) -> str:
    """Alma's text on one line, runs of whitespace single spaces; ``None`` is ""."""
    return "" if value is None else " ".join(str(value).split())


def as_list(value: object) -> list:
    """A JSON list, tolerantly: a single object is a list of one, a missing one is empty."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


@dataclass
class JobRun:
    """One run (instance) of the SIS job."""

    instance_id: str
    status: str
    submitted: dt.datetime | None
    ended: dt.datetime | None
    counts: dict[str, int] = field(default_factory=dict)  # created, updated, ..., others by description
    alerts: list[str] = field(default_factory=list)  # Alma's alerts on the run (alert[].desc)
    started: dt.datetime | None = None

    @property
    def running(self) -> bool:
        return self.status in RUNNING_STATES or not self.status

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCESS

    def metadata(self) -> dict[str, object]:
        return {
            "alma_job_instance_id": self.instance_id,
            "alma_job_status": self.status,
            "alma_job_submitted": self.submitted.isoformat() if self.submitted else "",
            "alma_job_ended": self.ended.isoformat() if self.ended else "",
            "alma_job_alerts": len(self.alerts),
            **{f"alma_users_{name}": self.counts.get(name, 0) for name in COUNTERS},
            **{f"alma_{name}": count for name, count in sorted(self.counts.items()) if name not in COUNTERS},
        }


def job_run(instance: Mapping) -> JobRun:
    """A job instance's JSON as a :class:`JobRun`."""
    counts: dict[str, int] = {}
    for counter in as_list(instance.get("counter")):
        if not isinstance(counter, Mapping):
            continue
        try:
            number = int(str(counter.get("value", "0")).replace(",", "") or 0)
        except ValueError:
            continue
        name = counter_name(_desc(counter.get("type")))
        counts[name] = counts.get(name, 0) + number
    return JobRun(
        instance_id=str(instance.get("id") or ""),
        status=value_of(instance.get("status")),
        submitted=parse_time(instance.get("submit_time")),
        ended=parse_time(instance.get("end_time")),
        counts=counts,
        alerts=[text for alert in as_list(instance.get("alert")) if (text := _desc(alert).strip())],
        started=parse_time(instance.get("start_time")),
    )


def first_run_after(
    instances: Iterable[Mapping], moment: dt.datetime, reported: Iterable[str] = ()
) -> Mapping | None:
    """The first run submitted at or after ``moment`` not already reported: the run that picked
    up a load uploaded at ``moment`` (Alma polls the bucket on its own schedule)."""
    done = set(reported)
    candidates = [
        (submitted, instance)
        for instance in instances
        if isinstance(instance, Mapping)
        and str(instance.get("id") or "") not in done
        and (submitted := parse_time(instance.get("submit_time"))) is not None
        and submitted >= moment
    ]
    return min(candidates, key=lambda pair: pair[0])[1] if candidates else None


@dataclass(frozen=True)
class Rejection:
    """One event of a SIS job run: a user Alma did not load. ``primary_id`` is the user as the
    load sent it ("" when no value of the event names a user of the load); ``reason`` is the
    event's other values; ``values`` every ``(code, value)`` Alma gave, in its order."""

    event_id: str
    primary_id: str
    reason: str
    values: tuple[tuple[str, str], ...]

    def described(self) -> str:
        """``code=value; code=value``: everything the event said."""
        return "; ".join(f"{code}={value}" for code, value in self.values)


_TOKEN = re.compile(r"[^\s,;:()\[\]{}<>\"'|]+")


def _event_values(event: Mapping) -> list[tuple[str, str]]:
    """An event's ``(code, value)`` pairs: its ``event_key`` entries, then any other plain field
    Alma may add (nothing it says is dropped)."""
    pairs = []
    for key in as_list(event.get("event_key")):
        if isinstance(key, Mapping):
            pairs.append((str(key.get("code") or ""), one_line(key.get("value"))))
        elif key is not None:
            pairs.append(("", one_line(key)))
    for name, value in event.items():
        if (
            name not in ("event_id", "event_key")
            and isinstance(value, str | int | float)
            and str(value).strip()
        ):
            pairs.append((name, one_line(value)))
    return pairs


def _sent_user(value: str, sent: Mapping[str, str]) -> tuple[str, bool]:
    """The sent primary id a value names, and whether it is the whole value; ("", False) if none."""
    whole = sent.get(value.strip().upper())
    if whole is not None:
        return whole, True
    for token in _TOKEN.findall(value):
        found = sent.get(token.strip(".").upper())
        if found is not None:
            return found, False
    return "", False


def rejections(events: Iterable[object], sent: Mapping[str, str]) -> list[Rejection]:
    """The users a SIS job run rejected, one per event (the events call returns rejected entries
    only). ``sent`` maps each primary id the load sent, in upper case, to the id as sent: Alma may
    echo it in another case. The reason is the event's values but the one that is the user."""
    found = []
    for event in events:
        if not isinstance(event, Mapping):
            continue
        pairs = _event_values(event)
        primary_id, whole_at = "", None
        for index, (_, value) in enumerate(pairs):
            primary_id, whole = _sent_user(value, sent)
            if primary_id:
                whole_at = index if whole else None
                break
        reason = " | ".join(value for index, (_, value) in enumerate(pairs) if value and index != whole_at)
        event_id = str(event.get("event_id") or "")
        found.append(Rejection(event_id, primary_id, reason or "(no reason given)", tuple(pairs)))
    return found
