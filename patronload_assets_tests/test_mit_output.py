"""MIT's output, fixed: two loads of one synthetic warehouse (the second after seven new staff and
20 students' new email addresses) give the users, metadata, change reports and report emails that
the code gave before MIT's rules moved into an institution folder (fixtures/mit_output/, written
by that code). What depends on the day or the run (expiry and purge dates, times, run ids) is
replaced by a placeholder on both sides; everything else must match byte for byte.

To write the files anew after a deliberate change of MIT's output: PATRONLOAD_WRITE_MIT_OUTPUT=1
(the test then skips), and review the diff."""

import datetime as dt
import email
import email.policy
import json
import os
import re
import zipfile
from pathlib import Path

import dagster as dg
import pytest

from patronload_assets.institutions.mit import synthetic
from patronload_assets.reports.sensors import success_report
from patronload_assets.resources.mail import OutboxMailer
from patronload_assets.state.store import InstanceState

from .conftest import FIXTURES, load
from .test_changes import new_staff_and_moved_students

EXPECTED = FIXTURES / "mit_output"
# The contract's dates (docs/patron-rules.md §3), computed here on their own: the run date plus
# 6 and 30 calendar months.
EXPIRY_MONTHS, PURGE_MONTHS = 6, 30
# When and where, not what; and the zips' sizes, which the day's dates (digits of another day
# compress differently) can change by a few bytes: the XML inside is compared instead.
VOLATILE_METADATA = {"uploaded_at", "dagster/uri", "location", "zip_bytes"}


def _plus_months(day: dt.date, months: int) -> dt.date:
    import calendar

    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _steady(text: str, run_date: dt.date | None = None) -> str:
    """``text`` with what depends on the day or the run replaced by placeholders."""
    if run_date is not None:
        text = text.replace(f"{_plus_months(run_date, EXPIRY_MONTHS).isoformat()}Z", "{EXPIRY}")
        text = text.replace(f"{_plus_months(run_date, PURGE_MONTHS).isoformat()}Z", "{PURGE}")
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "{RUN_ID}", text)
    text = re.sub(r"\d{4}-\d\d-\d\d[_T ]\d\d[.:]\d\d[.:]\d\d(\.\d+)?([+-]\d\d:?\d\d|Z)?", "{TIME}", text)
    text = re.sub(r"\d{4}-\d\d-\d\d", "{DATE}", text)
    text = re.sub(r"\d\d:\d\d:\d\d", "{TIME}", text)
    text = re.sub(r"\b\d+ bytes\b", "{BYTES} bytes", text)
    return re.sub(r"\b\d+(\.\d+)? ?(ms|s|seconds)\b", "{DURATION}", text)


def _users_xml(bucket: Path, run_date: dt.date) -> dict[str, str]:
    found = {}
    for path in sorted(bucket.rglob("*.zip")):
        patron_type = path.name.split("_")[0]
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                member = _steady(name)
                found[f"{patron_type}/{member}"] = _steady(archive.read(name).decode("utf-8"), run_date)
    return found


def _metadata(instance, run_id: str) -> str:
    recorded = {}
    for event in instance.all_logs(run_id):
        materialization = event.asset_materialization
        if materialization is None:
            continue
        recorded[materialization.asset_key.to_user_string()] = {
            name: _steady(json.dumps(value.value, sort_keys=True, default=str))
            for name, value in sorted(materialization.metadata.items())
            if name not in VOLATILE_METADATA
        }
    return json.dumps(recorded, indent=1, sort_keys=True)


def _email(message: email.message.EmailMessage) -> dict[str, str]:
    parts = {
        "subject": _steady(message["Subject"]),
        "body": _steady(message.get_body(("plain",)).get_content()),
    }
    for attachment in message.iter_attachments():
        parts[f"attachment/{_steady(attachment.get_filename())}"] = _steady(attachment.get_content())
    return parts


def mit_output(folder: Path) -> dict[str, str]:
    """Everything the two loads gave, by a name for each piece, with placeholders in place."""
    warehouse = synthetic.create_warehouse(folder / "dw.sqlite3", 300, 400)
    output: dict[str, str] = {}
    run_ids: list[str] = []
    with dg.instance_for_test() as instance:
        for number in (1, 2):
            if number == 2:
                new_staff_and_moved_students(warehouse, _loaded_students(folder / "bucket1"))
            result = load(warehouse, folder / f"bucket{number}", instance)
            assert result.success
            run_date = dt.datetime.fromtimestamp(instance.all_logs(result.run_id)[0].timestamp, dt.UTC).date()
            output.update(
                {
                    f"load{number}/{name}": text
                    for name, text in _users_xml(folder / f"bucket{number}", run_date).items()
                }
            )
            output[f"load{number}/metadata.json"] = _metadata(instance, result.run_id)
            run_ids.append(result.run_id)
        outbox = folder / "outbox"
        context = dg.build_sensor_context(
            instance=instance,
            resources={"mailer": OutboxMailer(directory=str(outbox)), "state": InstanceState()},
        )
        success_report(context)
        for number, run_id in enumerate(run_ids, start=1):
            [sent] = sorted(outbox.glob(f"*{run_id}*.eml"))
            message = email.message_from_bytes(sent.read_bytes(), policy=email.policy.default)
            output.update({f"load{number}/email/{name}": text for name, text in _email(message).items()})
    return output


def _loaded_students(bucket: Path) -> set[str]:
    """The primary ids of the student zip in ``bucket``."""
    from lxml import etree

    [path] = sorted(bucket.rglob("student_*.zip"))
    with zipfile.ZipFile(path) as archive:
        return {
            user.findtext("primary_id")
            for name in archive.namelist()
            for user in etree.fromstring(archive.read(name))
        }


def _file_name(name: str) -> str:
    return name.replace("/", "__").replace("{", "").replace("}", "") + ".txt"


def test_mit_output_is_what_it_was_before_the_institution_folder(tmp_path):
    output = mit_output(tmp_path)
    if os.environ.get("PATRONLOAD_WRITE_MIT_OUTPUT"):
        EXPECTED.mkdir(parents=True, exist_ok=True)
        for old in EXPECTED.glob("*.txt"):
            old.unlink()
        for name, text in output.items():
            (EXPECTED / _file_name(name)).write_text(text, encoding="utf-8")
        pytest.skip(f"wrote {len(output)} files to {EXPECTED}")
    expected = {path.name: path.read_text(encoding="utf-8") for path in EXPECTED.glob("*.txt")}
    produced = {_file_name(name): text for name, text in output.items()}
    assert sorted(produced) == sorted(expected)
    assert len(expected) >= 10
    for name in sorted(expected):
        assert produced[name] == expected[name], name
