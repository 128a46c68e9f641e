"""Same day (docs/patron-rules.md §13): the job ``patronload_now`` gives a few new people their Alma
account now, not after tomorrow's load. It reads only their rows, builds exactly the records the
daily load would (``domain/named.py``), and for each: a user Alma has is left alone (the SIS job
updates it tomorrow), a user Alma lacks is created through the Users API (with ``send: true``;
the default is a dry run). One failure does not stop the others. It writes nothing to the bucket,
the baselines or the state: tomorrow's load sees each person as it would have. It emails its own
report; logs and metadata carry counts only."""

import datetime as dt
from collections import Counter
from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from ..domain import checks
from ..domain.named import MOST_NAMES, NamedRecord, asked_names, named_records
from ..load.assets import OWN_TAGS
from ..load.retries import NEVER_RETRIED
from ..reports import emails
from ..reports.sensors import deliver
from ..resources.institution import InstitutionData
from ..resources.mail import Mailer
from ..resources.warehouse import Warehouse
from ..state import frames, scratch
from .api import AlmaApiError, AlmaUsers

CREATED, WOULD_CREATE, EXISTS = "created", "would_create", "existing"
MISSING, REJECTED, FAILED = "missing", "rejected_by_check", "failed"
OUTCOMES = (CREATED, WOULD_CREATE, EXISTS, MISSING, REJECTED, FAILED)  # counted on the run


class NowConfig(dg.Config):
    """``ops: {patronload_now: {config: {people: [...], send: false}}}``"""

    people: list[str] = Field(
        min_length=1,
        max_length=MOST_NAMES,
        description=f"1 to {MOST_NAMES} people, each by the institution's person key (MIT: a Kerberos name)",
    )
    send: bool = Field(
        default=False, description="Create the missing users in Alma. False (the default): only report."
    )


@dataclass(frozen=True)
class Outcome:
    name: str
    kind: str  # one of OUTCOMES
    text: str  # what the report says of this person


def decide(record: NamedRecord, alma: AlmaUsers, send: bool) -> Outcome:
    """Look the person up in Alma and, with ``send``, create a user Alma lacks."""
    if record.problem is not None:
        kind = REJECTED if record.user_xml is None and record.primary_id else MISSING
        return Outcome(record.name, kind, record.problem)
    where = f"{record.primary_id} ({record.patron_type})"
    try:
        if alma.has_user(record.primary_id):
            return Outcome(record.name, EXISTS, f"{where}: exists in Alma: tomorrow's load updates it")
        if not send:
            return Outcome(record.name, WOULD_CREATE, f"{where}: not in Alma: would be created")
        alma.create_user(record.user_xml, record.primary_id)
    except AlmaApiError as error:
        return Outcome(record.name, FAILED, f"{where}: Alma's error: {error}")
    return Outcome(record.name, CREATED, f"{where}: created in Alma")


def now_lines(outcomes: list[Outcome], send: bool, run_id: str) -> list[str]:
    """The report: each name and what became of it."""
    counts = Counter(outcome.kind for outcome in outcomes)
    heading = f"Patronload now, run {run_id}: {len(outcomes)} name(s); " + ", ".join(
        f"{kind.replace('_', ' ')} {counts[kind]}" for kind in OUTCOMES if counts[kind]
    )
    return [
        heading,
        "" if send else "DRY RUN (send: false): nothing was created in Alma. Run again with send: true.",
        "",
        *(f"{outcome.name}: {outcome.text}" for outcome in outcomes),
        "",
        "Nothing was written to the bucket Alma's SIS job reads: tomorrow's load sends these people as "
        "usual.",
    ]


def send_report(context, mailer: Mailer, moment: dt.datetime, lines: list[str], failed: bool = False) -> str:
    """Email the job's report (``{WORKSPACE} Patronload now {date}``, ``... failed``), retried."""
    subject = (
        f"{mailer.workspace.upper()} Patronload now {moment.date().isoformat()}{' failed' if failed else ''}"
    )
    message = emails.compose(subject, lines, mailer.sender, mailer.recipient_list())
    label = f"{moment:%Y%m%dT%H%M%S}-{context.run.run_id}-now{'-failure' if failed else ''}"
    return deliver(mailer, message, label, context.log)


@dg.op(
    description="Reads only the named people from both views, builds their records exactly as the daily "
    "load does, and creates in Alma those it lacks (send: true); emails the report.",
    out=dg.Out(dg.Nothing),  # counts as output metadata; nothing for an IO manager to store
)
def named_accounts_now(
    context: dg.OpExecutionContext,
    config: NowConfig,
    warehouse: Warehouse,
    institution: InstitutionData,
    alma_users: AlmaUsers,
    mailer: Mailer,
) -> dg.Output:
    moment = dt.datetime.now(dt.UTC).replace(microsecond=0)
    try:
        outcomes, metadata = _run(context, config, warehouse, institution, alma_users, moment)
    except Exception as error:  # the report says so: the run failure sensors watch the daily load only
        lines = [f"Patronload now, run {context.run.run_id}, FAILED before its report: {error}",
                 "", "Nothing was created in Alma by this run after the failure."]  # fmt: skip
        send_report(context, mailer, moment, lines, failed=True)
        raise
    where = send_report(context, mailer, moment, now_lines(outcomes, config.send, context.run.run_id))
    context.log.info(f"report sent: {where}")
    return dg.Output(None, metadata=metadata)  # the counts on the run; nothing stored


def _run(context, config: NowConfig, warehouse, institution, alma_users: AlmaUsers, moment: dt.datetime):
    """Every name's outcome, and the run's counts."""
    if config.send and not alma_users.may_send:
        raise dg.Failure(
            "send: true in dev needs ALMA_API_BASE_URL set explicitly (a sandbox's gateway): nothing was sent"
        )
    loaded = institution.load()
    names = asked_names(config.people, loaded.rules.person_key_title)
    repairs: Counter = Counter()
    rows = {}
    for patron_type in (loaded.rules.staff, loaded.rules.student):
        frame, repaired = warehouse.extract(loaded.rules, patron_type.name, context.log, names)
        repairs += repaired
        rows[patron_type.name] = list(frames.records(frame))
    context.log.info(
        f"{len(names)} name(s): {len(rows['staff'])} staff and {len(rows['student'])} student row(s)"
    )
    with scratch.scratch(context.instance, context.run.run_id, "now") as folder:
        records, counts = named_records(
            names, rows["staff"], rows["student"], loaded, moment, folder,
            checks.user_schemas(institution.alma_user_xsd),
        )  # fmt: skip
    outcomes = [decide(record, alma_users, config.send) for record in records]
    tally = Counter(outcome.kind for outcome in outcomes)
    metadata = {kind: tally[kind] for kind in OUTCOMES} | {"send": config.send, **dict(repairs + counts)}
    context.log.info(", ".join(f"{kind} {count}" for kind, count in tally.items()))
    return outcomes, metadata


@dg.job(
    name="patronload_now",
    tags={**NEVER_RETRIED, **OWN_TAGS},  # a send creates accounts: never again by itself
    description="Same day: the named people's Alma accounts now (run config: people, send). A dry "
    "run unless send: true; never overwrites a user Alma has; writes nothing the daily load reads.",
)
def patronload_now_job():
    # The step is called patronload_now, as its run config says (ops: patronload_now: config: ...);
    # its op cannot share the job's name.
    named_accounts_now.alias("patronload_now")()
