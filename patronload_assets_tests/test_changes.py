"""What changed since the last load (docs/patron-rules.md §11): the comparison, its baseline, the
departures guard and the preview, on real loads of a SQLite warehouse into a local bucket."""

import csv
import datetime as dt
import io
import sqlite3
import stat
import zipfile
from collections import Counter

import dagster as dg
import pytest
from lxml import etree

from patronload_assets.domain import changes
from patronload_assets.domain.load import Institution, build_zips
from patronload_assets.domain.packaging import rewrite_without
from patronload_assets.institutions.mit import RULES as MIT
from patronload_assets.institutions.mit import synthetic
from patronload_assets.load import jobs
from patronload_assets.reports import emails, sensors
from patronload_assets.resources.bucket import LocalBucket
from patronload_assets.resources.institution import InstitutionData
from patronload_assets.resources.warehouse import SqliteWarehouse

from .conftest import instance_state, load, state_resources

ZIP_ASSETS = ("staff_zip", "student_zip")


def _rows(warehouse, view: str) -> list[dict]:
    with sqlite3.connect(warehouse) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute(MIT.query(view))]


def _metadata(result, asset: str) -> dict:
    [materialization] = result.asset_materializations_for_node(asset)
    return {name: value.value for name, value in materialization.metadata.items()}


def _loaded(bucket, patron_type: str) -> dict[str, etree._Element]:
    """The users of the type's zip in the bucket by primary id, parsed here (not by the code under test)."""
    [path] = (bucket / "alma").glob(f"{patron_type}_*.zip")
    users = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            for user in etree.fromstring(archive.read(name)):
                users[user.findtext("primary_id").upper()] = user
    return users


def _clean_students(warehouse, loaded_students: dict) -> list[dict]:
    """Loaded student rows whose Kerberos name and identifiers appear once in both views: removing
    or changing one affects that person alone."""
    staff, students = _rows(warehouse, "staff"), _rows(warehouse, "student")
    names = Counter((row["KRB_NAME_UPPERCASE"] or "").strip().upper() for row in staff + students)
    identifiers = Counter(
        (row[column] or "").strip().upper() for row in staff + students for column in ("MIT_ID", "LIBRARY_ID")
    )
    return [
        row
        for row in students
        if (name := (row["KRB_NAME_UPPERCASE"] or "").strip().upper())
        and names[name] == 1
        and f"{name}@MIT.EDU" in loaded_students
        and all(identifiers[(row[column] or "").strip().upper()] <= 1 for column in ("MIT_ID", "LIBRARY_ID"))
        and "@" in (row["EMAIL_ADDRESS"] or "")
    ]


def _add_staff(warehouse, count: int) -> None:
    """``count`` new staff: copies of a staff row under new Kerberos names and identifiers."""
    with sqlite3.connect(warehouse) as connection:
        connection.row_factory = sqlite3.Row
        template = dict(connection.execute(f"SELECT * FROM {synthetic.STAFF_VIEW} LIMIT 1").fetchone())
        for number in range(count):
            row = {
                **template,
                "KRB_NAME_UPPERCASE": f"ZZNEW{number}",
                "MIT_ID": f"99900{number:04d}",
                "LIBRARY_ID": f"3908099900{number:04d}",
                "EMAIL_ADDRESS": f"zznew{number}@example.edu",
            }
            marks = ", ".join("?" for _ in row)
            connection.execute(
                f"INSERT INTO {synthetic.STAFF_VIEW} ({', '.join(row)}) VALUES ({marks})", list(row.values())
            )


def _preview_job(warehouse, bucket) -> dg.JobDefinition:
    """The dry run on the test's warehouse and bucket (as ``load`` runs the assets)."""
    resources = {
        "warehouse": SqliteWarehouse(path=str(warehouse)),
        "bucket": LocalBucket(directory=str(bucket), prefix="alma"),
        "institution": InstitutionData(),
        **state_resources(),
    }
    return dg.Definitions(jobs=[jobs.patronload_preview], resources=resources).resolve_job_def(
        "patronload_preview"
    )


def _student_update(warehouse, sql: str, names: list[str]) -> None:
    with sqlite3.connect(warehouse) as connection:
        connection.executemany(sql, [(name,) for name in names])


def new_staff_and_moved_students(warehouse, loaded_students) -> list[str]:
    """The warehouse's change between two loads of the production-shape and MIT-output tests:
    seven new staff, and 20 loaded students with a new email address (their Kerberos names)."""
    changed = [row["KRB_NAME_UPPERCASE"] for row in _clean_students(warehouse, loaded_students)[:20]]
    assert len(changed) == 20
    _add_staff(warehouse, 7)
    _student_update(
        warehouse,
        f"UPDATE {synthetic.STUDENT_VIEW} SET EMAIL_ADDRESS = 'moved.' || EMAIL_ADDRESS "
        "WHERE KRB_NAME_UPPERCASE = ?",
        changed,
    )
    return changed


# -- the domain -----------------------------------------------------------------------------------


def test_the_writers_digests_are_those_read_back_from_the_files(tmp_path):
    """The baseline a new instance reads from the bucket equals the one the writer kept."""
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 1500, 1500)
    institution = Institution.load(MIT)
    moment = dt.datetime(2026, 11, 30, 6, tzinfo=dt.UTC)
    for patron_type in (MIT.staff, MIT.student):
        rows = _rows(warehouse, patron_type.name)
        result = build_zips(rows, len(rows), patron_type, institution, moment, tmp_path)
        read_back = changes.Fingerprints()
        for packaged in result.zips:
            with zipfile.ZipFile(packaged.path) as archive:
                for name in packaged.xml_files:
                    for key, digests in changes.fingerprints_of_document(archive.read(name)):
                        read_back.add(key, digests)
        assert len(read_back) == len(rows)
        assert read_back.primary_ids == result.fingerprints.primary_ids
        assert read_back.digests == result.fingerprints.digests
        assert sum(1 for primary_id in read_back.primary_ids if primary_id.endswith("@MIT.EDU")) > 1000


def test_digests_follow_the_groups_not_the_layout():
    """The same user written with other whitespace, attribute quotes and empty-element forms has
    other digests only where the bytes of a group differ; the expiry date belongs to no group."""
    user = (
        b"<users><user><primary_id>ab@mit.edu</primary_id><first_name>Ada</first_name>"
        b"<expiry_date>2027-01-01Z</expiry_date><contact_info><addresses/><emails>"
        b"<email preferred='true'><email_address>a@x.edu</email_address></email></emails><phones/>"
        b"</contact_info><user_statistics/></user></users>"
    )
    [(key, digests)] = changes.fingerprints_of_document(user)
    assert changes.primary_id_text(key) == "ab@mit.edu"  # as sent; compared in upper case
    later = user.replace(b"2027-01-01Z", b"2027-06-01Z")
    assert list(changes.fingerprints_of_document(later))[0][1] == digests
    other_email = user.replace(b"a@x.edu", b"b@x.edu")
    changed = list(changes.fingerprints_of_document(other_email))[0][1]
    assert [group for group, a, b in zip(changes.GROUPS, digests, changed, strict=True) if a != b] == [
        "email"
    ]


def test_compare_counts_new_departed_changed_and_unchanged_by_group():
    def fingerprints(users):
        result = changes.Fingerprints()
        for primary_id, digests in users:
            result.add(f"<primary_id>{primary_id}</primary_id>".encode(), digests)
        return result

    width = len(changes.GROUPS)
    before = fingerprints([("a", [1] * width), ("b", [2] * width), ("c", [3] * width), ("d", [4] * width)])
    email, name = changes.GROUPS.index("email"), changes.GROUPS.index("name")
    b_changed = [2] * width
    b_changed[email] = 9
    c_changed = [3] * width
    c_changed[email], c_changed[name] = 9, 9
    now = fingerprints([("A", [1] * width), ("b", b_changed), ("c", c_changed), ("e", [5] * width)])
    comparison = changes.compare(before, now, "the test's last load")
    assert comparison.counts == Counter(new=1, departed=1, changed=2, unchanged=1)
    assert comparison.changed_groups["email"] == 2 and comparison.changed_groups["name"] == 1
    assert sum(comparison.changed_groups.values()) == 3
    rows = {tuple(row) for row in comparison.changes.itertuples(index=False)}
    assert rows == {
        ("E", "new", ""),
        ("D", "departed", ""),
        ("B", "changed", "email"),
        ("C", "changed", "name,email"),
    }
    assert comparison.departed_share() == 0.25
    first = changes.compare(None, now)
    assert first.describe() == "no previous load: 4 new" and first.previous is None


def test_a_baseline_is_owner_only_and_holds_no_personal_data(tmp_path):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 300, 10)
    rows = _rows(warehouse, "staff")
    moment = dt.datetime(2026, 11, 30, 6, tzinfo=dt.UTC)
    result = build_zips(rows, len(rows), MIT.staff, Institution.load(MIT), moment, tmp_path)
    path = tmp_path / "staff.arrow"
    changes.write_baseline(path, changes.Baseline(result.fingerprints, moment, ["alma/staff_x.zip"]))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = path.read_bytes()
    personal = {
        (row[column] or "").strip()
        for row in rows
        for column in (
            "EMAIL_ADDRESS",
            "LEGAL_FIRST_NAME",
            "LEGAL_LAST_NAME",
            "OFFICE_ADDRESS",
            "OFFICE_PHONE",
        )
    }
    assert not [value for value in personal if len(value) >= 5 and value.encode() in stored]
    baseline = changes.read_baseline(path)
    assert baseline.load_time == moment and baseline.keys == ["alma/staff_x.zip"]
    assert baseline.fingerprints.primary_ids == result.fingerprints.primary_ids  # as sent, in order
    assert changes.compare(result.fingerprints, baseline.fingerprints).counts[changes.UNCHANGED] == len(
        {primary_id.upper() for primary_id in result.fingerprints.primary_ids}  # compared in upper case
    )
    path.write_bytes(b"not arrow")
    assert changes.read_baseline(path) is None  # the bucket's zips are the fallback


def test_leaving_a_user_out_keeps_the_others_bytes(tmp_path):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 50, 10)
    rows = _rows(warehouse, "staff")
    moment = dt.datetime(2026, 11, 30, 6, tzinfo=dt.UTC)
    [packaged] = build_zips(rows, len(rows), MIT.staff, Institution.load(MIT), moment, tmp_path).zips
    [name] = packaged.xml_files
    with zipfile.ZipFile(packaged.path) as archive:
        before = archive.read(name).split(b"\n")
    rewrite_without([packaged], {(name, 3)})
    with zipfile.ZipFile(packaged.path) as archive:
        after = archive.read(name).split(b"\n")
    assert after == before[:4] + before[5:]  # declaration, <users>, users 1 and 2, then user 4 on


# -- real loads -----------------------------------------------------------------------------------


def test_two_loads_report_exactly_what_changed_between_them(tmp_path):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 400, 600)
    bucket = tmp_path / "bucket"
    with dg.instance_for_test() as instance:
        first = load(warehouse, bucket, instance)
        assert first.success
        for asset in ZIP_ASSETS:
            metadata = _metadata(first, asset)
            assert metadata["patrons_new"] == metadata["patrons"] > 0
            assert metadata["patrons_departed"] == metadata["patrons_changed"] == 0
            assert metadata["previous_load"] == "none"
        departures = [c for c in first.get_asset_check_evaluations() if c.check_name == "departures"]
        assert len(departures) == 2 and all(c.passed for c in departures)
        assert all(c.description.startswith("no previous load:") for c in departures)

        clean = _clean_students(warehouse, _loaded(bucket, "student"))
        assert len(clean) >= 40
        removed = [row["KRB_NAME_UPPERCASE"] for row in clean[:15]]
        emailed = [row["KRB_NAME_UPPERCASE"] for row in clean[15:40]]
        _add_staff(warehouse, 7)
        _student_update(
            warehouse, f"DELETE FROM {synthetic.STUDENT_VIEW} WHERE KRB_NAME_UPPERCASE = ?", removed
        )
        _student_update(
            warehouse,
            f"UPDATE {synthetic.STUDENT_VIEW} SET EMAIL_ADDRESS = 'moved.' || EMAIL_ADDRESS "
            "WHERE KRB_NAME_UPPERCASE = ?",
            emailed,
        )

        second = load(warehouse, bucket, instance)
        assert second.success
        staff, students = _metadata(second, "staff_zip"), _metadata(second, "student_zip")
        assert (staff["patrons_new"], staff["patrons_departed"], staff["patrons_changed"]) == (7, 0, 0)
        assert staff["patrons_unchanged"] == staff["patrons"] - 7
        assert (students["patrons_new"], students["patrons_departed"], students["patrons_changed"]) == (
            0,
            15,
            25,
        )
        assert students["changed_email"] == 25
        assert all(students[f"changed_{group}"] == 0 for group in changes.GROUPS if group != "email")
        assert students["previous_load"].startswith("the last load (")

        # The run report: the section, and the patrons by primary id in an attachment.
        run = instance.get_run_by_id(second.run_id)
        message = emails.success_message(
            sensors.run_facts(instance, run, instance_state(instance)), "test", "a@b", ["c@d"]
        )
        body = message.get_body().get_content()
        assert "Changes since the last load:" in body
        assert "student_zip: 0 new, 15 departed, 25 changed" in body
        assert "staff_zip: 7 new, 0 departed, 0 changed" in body
        attachments = {part.get_filename(): part.get_content() for part in message.iter_attachments()}
        listed = list(csv.DictReader(io.StringIO(attachments["student_changes.csv"])))
        assert Counter(row["change"] for row in listed) == Counter(departed=15, changed=25)
        assert {row["primary_id"] for row in listed if row["change"] == "departed"} == {
            f"{name}@MIT.EDU" for name in removed
        }
        assert {row["groups"] for row in listed if row["change"] == "changed"} == {"email"}
        assert "ZZNEW3@MIT.EDU,new," in attachments["staff_changes.csv"]

        # Unchanged warehouse: nothing new, departed or changed, and no list to attach.
        third = load(warehouse, bucket, instance)
        for asset in ZIP_ASSETS:
            metadata = _metadata(third, asset)
            assert metadata["patrons_unchanged"] == metadata["patrons"]
            assert metadata["patrons_new"] == metadata["patrons_departed"] == metadata["patrons_changed"] == 0
        assert not [
            name for name in instance_state(instance).read_report_files(third.run_id) if "changes" in name
        ]

    # A new instance over the same bucket (Alma has renamed the student zip it processed) finds its
    # baseline there.
    [student_zip] = (bucket / "alma").glob("student_*.zip")
    student_zip.rename(student_zip.with_name(student_zip.name + ".processed"))
    with dg.instance_for_test() as fresh:
        assert instance_state(fresh).read_baseline("staff") is None
        fourth = load(warehouse, bucket, fresh)
        assert fourth.success
        for asset in ZIP_ASSETS:
            metadata = _metadata(fourth, asset)
            assert metadata["previous_load"].startswith("the bucket's newest")
            assert metadata["patrons_unchanged"] == metadata["patrons"] > 0
            assert metadata["patrons_new"] == metadata["patrons_departed"] == metadata["patrons_changed"] == 0
        assert len(instance_state(fresh).read_baseline("staff").fingerprints) > 0


def test_a_swapped_student_view_of_the_same_size_is_held_back(tmp_path):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 200, 600)
    bucket = tmp_path / "bucket"
    with dg.instance_for_test() as instance:
        assert load(warehouse, bucket, instance).success
        loaded = _loaded(bucket, "student")
        [before] = (bucket / "alma").glob("student_*.zip")
        before_bytes = before.read_bytes()
        # 60 % of the loaded students replaced by other people: same count, other primary ids.
        swapped = sorted(loaded)[: int(len(loaded) * 0.6)]
        with sqlite3.connect(warehouse) as connection:
            for number, primary_id in enumerate(swapped):
                connection.execute(
                    f"UPDATE {synthetic.STUDENT_VIEW} SET KRB_NAME_UPPERCASE = ?, MIT_ID = ?, "
                    "LIBRARY_ID = NULL WHERE upper(trim(KRB_NAME_UPPERCASE)) = ?",
                    (f"SWAP{number}", f"98800{number:04d}", primary_id.removesuffix("@MIT.EDU")),
                )
        result = load(warehouse, bucket, instance)
        assert not result.success
        evaluations = {(c.asset_key.path[-1], c.check_name): c for c in result.get_asset_check_evaluations()}
        assert evaluations[("student_zip", "shrink")].passed  # the count alone says nothing is wrong
        departures = evaluations[("student_zip", "departures")]
        assert not departures.passed and "held back" in departures.description
        assert departures.metadata["patrons_departed"].value >= len(swapped)
        assert evaluations[("staff_zip", "departures")].passed
        assert [path.read_bytes() for path in (bucket / "alma").glob("student_*.zip")] == [before_bytes]
        failures = [event.step_key for event in result.all_events if event.is_step_failure]
        assert failures == ["student_zip"]

        override = {"ops": {"student_zip": {"config": {"allow_departures": True}}}}
        allowed = load(warehouse, bucket, instance, run_config=override)
        assert allowed.success
        assert _metadata(allowed, "student_zip")["patrons_departed"] >= len(swapped)
        assert {f"SWAP{number}@MIT.EDU" for number in range(len(swapped))} <= set(_loaded(bucket, "student"))


def test_a_preview_reports_what_a_load_would_change_and_touches_nothing(tmp_path):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 300, 400)
    bucket = tmp_path / "bucket"
    preview_job = _preview_job(warehouse, bucket)
    with dg.instance_for_test() as instance:
        assert load(warehouse, bucket, instance).success
        clean = _clean_students(warehouse, _loaded(bucket, "student"))
        _student_update(warehouse, f"DELETE FROM {synthetic.STUDENT_VIEW} WHERE KRB_NAME_UPPERCASE = ?",
                        [row["KRB_NAME_UPPERCASE"] for row in clean[:10]])  # fmt: skip
        bucket_before = {path.name: path.read_bytes() for path in (bucket / "alma").iterdir()}
        baseline = instance_state(instance).read_baseline("student")

        preview = preview_job.execute_in_process(instance=instance)
        assert preview.success
        assert {path.name: path.read_bytes() for path in (bucket / "alma").iterdir()} == bucket_before
        after = instance_state(instance).read_baseline("student")
        assert (after.load_time, after.keys) == (baseline.load_time, baseline.keys)
        assert after.fingerprints == baseline.fingerprints
        observed = {
            event.asset_key.path[-1]: {name: value.value for name, value in event.metadata.items()}
            for event in preview.get_asset_observation_events()
            for event in [event.event_specific_data.asset_observation]
        }
        assert observed["student_zip"]["patrons_departed"] == 10 and observed["student_zip"]["preview"]
        assert observed["staff_zip"]["patrons_unchanged"] == observed["staff_zip"]["patrons"]
        for asset in ZIP_ASSETS:  # a preview is no load: the asset's last materialization is the load's
            event = instance.get_latest_materialization_event(dg.AssetKey(asset))
            assert event.run_id != preview.run_id

        run = instance.get_run_by_id(preview.run_id)
        assert sensors.touches_patronload(instance, run)
        message = emails.success_message(
            sensors.run_facts(instance, run, instance_state(instance)), "test", "a@b", ["c@d"]
        )
        assert message["Subject"].endswith("preview")
        body = message.get_body().get_content()
        assert "PREVIEW: nothing was uploaded or deleted" in body
        assert "student_zip: 0 new, 10 departed, 0 changed" in body

        # The load that follows reports what the preview said.
        after = load(warehouse, bucket, instance)
        assert _metadata(after, "student_zip")["patrons_departed"] == 10


@pytest.mark.parametrize("patron_type", ["staff", "student"])
def test_a_preview_tells_a_load_would_be_held_back(tmp_path, patron_type):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 200, 200)
    bucket = tmp_path / "bucket"
    preview_job = _preview_job(warehouse, bucket)
    view = synthetic.STAFF_VIEW if patron_type == "staff" else synthetic.STUDENT_VIEW
    with dg.instance_for_test() as instance:
        assert load(warehouse, bucket, instance).success
        with sqlite3.connect(warehouse) as connection:
            connection.execute(f"UPDATE {view} SET KRB_NAME_UPPERCASE = 'X' || rowid, MIT_ID = NULL")
        preview = preview_job.execute_in_process(instance=instance)
        assert preview.success  # a preview reports; it holds nothing back itself
        [observation] = [
            event.event_specific_data.asset_observation
            for event in preview.get_asset_observation_events()
            if event.asset_key.path[-1] == f"{patron_type}_zip"
        ]
        assert "departures check failed" in observation.metadata["held_back"].value
        run = instance.get_run_by_id(preview.run_id)
        body = emails.success_message(
            sensors.run_facts(instance, run, instance_state(instance)), "t", "a@b", ["c@d"]
        ).get_body()
        assert f"{patron_type}_zip" in body.get_content() and "hold it back: departures" in body.get_content()
