"""Alma's verdict on a load: its SIS synchronize job's run, read from the Jobs API's JSON
(docs/patron-rules.md §12). Tolerant of missing fields: Alma omits what it has nothing to say about.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# A job instance is still at work in these states; any other is an end (COMPLETED_SUCCESS,
# COMPLETED_FAILED, COMPLETED_NO_BULKS, FAILED, ...).
RUNNING_STATES = frozenset({"QUEUED", "PENDING", "INITIALIZING", "RUNNING", "FINALIZING"})
# The job report's counters, named by a word of their description ("Users created", ...).
COUNTERS = ("created", "updated", "unchanged", "rejected")
_WORD = re.compile(r"[a-z]+")


def _value(item: object) -> str:
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
    """A counter's metadata name: ``created`` for "Number of users created", ``unchanged`` for
    "Users not changed", ...; else its description in lower case words joined by ``_``."""
    words = _WORD.findall(description.lower())
    for name, spellings in COUNTER_WORDS:
        if any(spelling <= set(words) for spelling in spellings):
            return name
    return "_".join(words) or "unnamed"


@dataclass
class JobRun:
    """One run (instance) of the SIS job."""

    instance_id: str
    status: str
    submitted: dt.datetime | None
    ended: dt.datetime | None
    counts: dict[str, int] = field(default_factory=dict)  # created, updated, ..., others by description

    @property
    def running(self) -> bool:
        return self.status in RUNNING_STATES or not self.status

    @property
    def succeeded(self) -> bool:
        return self.status == "COMPLETED_SUCCESS"

    def metadata(self) -> dict[str, object]:
        return {
            "alma_job_instance_id": self.instance_id,
            "alma_job_status": self.status,
            "alma_job_submitted": self.submitted.isoformat() if self.submitted else "",
            "alma_job_ended": self.ended.isoformat() if self.ended else "",
            **{f"alma_users_{name}": self.counts.get(name, 0) for name in COUNTERS},
            **{f"alma_{name}": count for name, count in sorted(self.counts.items()) if name not in COUNTERS},
        }


def job_run(instance: Mapping) -> JobRun:
    """A job instance's JSON as a :class:`JobRun`."""
    counts: dict[str, int] = {}
    counters = instance.get("counter") or []
    for counter in counters if isinstance(counters, list) else [counters]:
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
        status=_value(instance.get("status")),
        submitted=parse_time(instance.get("submit_time")),
        ended=parse_time(instance.get("end_time")),
        counts=counts,
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
    primary_id: str
    reason: str


def rejections(events: Iterable[Mapping]) -> list[Rejection]:
    """The users a run rejected, from its events (a SIS job lists the users it did not load): the
    user's primary id (``entity``) and Alma's reason (the event's description, else its type). An
    event whose type says the user was loaded (created, updated, unchanged) is no rejection."""
    found = []
    for event in events:
        if not isinstance(event, Mapping):
            continue
        kind = set(_WORD.findall(f"{_value(event.get('type'))} {_desc(event.get('type'))}".lower()))
        if kind & LOADED_WORDS and not kind & REJECTED_WORDS:
            continue
        entity = event.get("entity")
        primary_id = (_value(entity) if entity else "").strip()
        reason = str(event.get("description") or "").strip() or _desc(event.get("type"))
        found.append(Rejection(primary_id or "(not named)", " ".join(reason.split())))
    return found


LOADED_WORDS = frozenset({"created", "updated", "unchanged", "info", "information"})
REJECTED_WORDS = frozenset({"rejected", "reject", "error", "failed", "failure", "invalid"})
