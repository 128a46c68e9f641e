"""Zips as Alma takes them (docs/patron-rules.md §8): names, limits, sets of files, stale zips."""

import datetime as dt
import zipfile

import pytest
from lxml import etree

from patronload_assets.domain.packaging import (
    AlmaLimits,
    PackagingError,
    latest_set,
    newest_load_time,
    object_key,
    plan_files,
    rewrite_without,
    stale_keys,
    write_zips,
)

MOMENT = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def users(count):
    return (f"<user><primary_id>U{index}</primary_id></user>".encode() for index in range(count))


def test_one_zip_one_file_named_by_type_and_utc_time(tmp_path):
    eastern = MOMENT.astimezone(dt.timezone(dt.timedelta(hours=-5)))
    [packaged] = write_zips(users(3), 3, "staff", eastern, tmp_path)
    assert packaged.name == "staff_2026-01-02_03.04.05.zip"
    with zipfile.ZipFile(packaged.path) as archive:
        assert archive.namelist() == ["staff_2026-01-02_03.04.05.xml"]
        xml = archive.read("staff_2026-01-02_03.04.05.xml")
    assert not xml.startswith(b"\xef\xbb\xbf")
    assert xml.count(b"<user>") == 3 and xml.endswith(b"</users>\n")


def test_users_split_over_files_and_zips(tmp_path):
    limits = AlmaLimits(users_per_file=4, max_files_per_zip=2)
    packaged = write_zips(users(19), 19, "student", MOMENT, tmp_path, limits)
    assert [p.name for p in packaged] == [f"student_2026-01-02_03.04.05_{n:02d}.zip" for n in (1, 2, 3)]
    assert [p.patrons for p in packaged] == [8, 8, 3]
    seen = []
    for p in packaged:
        with zipfile.ZipFile(p.path) as archive:
            assert archive.namelist() == list(p.xml_files)
            for name in archive.namelist():
                seen += [line for line in archive.read(name).splitlines() if line.startswith(b"<user>")]
    assert seen == list(users(19))
    assert packaged[0].xml_files == (
        "student_2026-01-02_03.04.05_01_001.xml",
        "student_2026-01-02_03.04.05_01_002.xml",
    )


def test_streaming_a_generator_of_many_rows(tmp_path):
    limits = AlmaLimits(users_per_file=25_000)
    packaged = write_zips(users(60_000), 60_000, "staff", MOMENT, tmp_path, limits)
    assert [len(p.xml_files) for p in packaged] == [3]
    assert packaged[0].patrons == 60_000


def test_a_load_over_almas_zip_count_is_refused_before_writing(tmp_path):
    limits = AlmaLimits(users_per_file=1, max_files_per_zip=2, max_zips_per_load=3)
    assert len(plan_files(6, limits)) == 3
    with pytest.raises(PackagingError, match="at most 3 zips"):
        write_zips(users(7), 7, "staff", MOMENT, tmp_path, limits)
    assert list(tmp_path.iterdir()) == []


def test_a_zip_over_almas_size_is_refused(tmp_path):
    with pytest.raises(PackagingError, match="Alma takes zips of at most 100 bytes"):
        write_zips(users(50), 50, "staff", MOMENT, tmp_path, AlmaLimits(max_zip_bytes=100))


def test_fewer_or_more_users_than_planned_is_an_error(tmp_path):
    with pytest.raises(PackagingError, match="fewer users"):
        write_zips(users(2), 3, "staff", MOMENT, tmp_path / "")
    with pytest.raises(PackagingError, match="more staff users"):
        write_zips(users(4), 3, "staff", MOMENT, tmp_path)


def test_stale_keys_are_the_types_older_zips_directly_under_the_prefix():
    existing = [
        "alma/staff_2026-01-01_05.00.00.zip",
        "alma/staff_2026-01-02_03.04.05.zip",
        "alma/staff_2026-01-02_03.04.06_01.zip",  # a newer run's (a set): never this run's to delete
        "alma/staff_2025-12-31_05.00.00.zip.processed",  # renamed by Alma: left alone
        "alma/student_2026-01-01_05.00.00.zip",
        "alma/archive/staff_2020-01-01_05.00.00.zip",
        "other/staff_2026-01-01_05.00.00.zip",
        "alma/staffing.zip",
        "alma/staff_by_hand.zip",  # no time in the name: stale, Alma must not see two files
    ]
    this_run = ["alma/staff_2026-01-02_03.04.05.zip"]
    assert stale_keys(existing, "alma", "staff", keep=this_run, uploaded=MOMENT) == [
        "alma/staff_2026-01-01_05.00.00.zip",
        "alma/staff_by_hand.zip",
    ]
    assert stale_keys(existing, "/alma/", "student", keep=[], uploaded=MOMENT) == [
        "alma/student_2026-01-01_05.00.00.zip"
    ]
    assert stale_keys(["staff_1.zip", "alma/staff_2.zip"], "", "staff", keep=[], uploaded=MOMENT) == [
        "staff_1.zip"
    ]
    # An older run finishing after a newer one deletes nothing of the newer one's.
    older = dt.datetime(2026, 1, 2, 3, 4, 0, tzinfo=dt.UTC)
    assert "alma/staff_2026-01-02_03.04.05.zip" not in stale_keys(existing, "alma", "staff", [], older)


def test_users_left_out_of_a_zip_are_rewritten_without_them(tmp_path):
    limits = AlmaLimits(users_per_file=4, max_files_per_zip=2)
    packaged = write_zips(users(11), 11, "staff", MOMENT, tmp_path, limits)
    first, second = packaged[0].xml_files
    rewritten = rewrite_without(packaged, {(first, 1), (second, 4), (packaged[1].xml_files[0], 2)})
    assert [p.patrons for p in rewritten] == [6, 2]
    kept = []
    for p in rewritten:
        with zipfile.ZipFile(p.path) as archive:
            assert archive.namelist() == list(p.xml_files)
            assert archive.comment == f"patronload patrons={p.patrons}".encode()
            for name in archive.namelist():
                xml = archive.read(name)
                assert xml.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<users>')
                kept += [user.findtext("primary_id") for user in etree.fromstring(xml)]
    assert kept == ["U1", "U2", "U3", "U4", "U5", "U6", "U8", "U10"]


def test_object_keys():
    assert object_key("alma/", "staff.zip") == "alma/staff.zip"
    assert object_key("", "staff.zip") == "staff.zip"


@pytest.mark.slow
def test_records_are_streamed_not_held(tmp_path):
    """40,000 users (about 100 MB of XML) built from a generator stay far below that in memory."""
    import tracemalloc

    from patronload_assets.domain.load import Institution, build_zips
    from patronload_assets.institutions.mit import RULES as MIT
    from patronload_assets.institutions.mit import synthetic

    count = 40_000
    institution = Institution.load(MIT)
    rows = (dict(zip(MIT.staff.columns, row, strict=True)) for row in synthetic.staff_rows(count))
    tracemalloc.start()
    try:
        result = build_zips(
            rows, count, MIT.staff, institution, MOMENT, tmp_path, AlmaLimits(users_per_file=15_000)
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.patrons == count and [len(p.xml_files) for p in result.zips] == [3]
    assert peak < 25 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"


def test_each_zip_records_its_patron_count_in_its_comment(tmp_path):
    limits = AlmaLimits(users_per_file=4, max_files_per_zip=2)
    packaged = write_zips(users(11), 11, "staff", MOMENT, tmp_path, limits)
    comments = []
    for p in packaged:
        with zipfile.ZipFile(p.path) as archive:
            comments.append(archive.comment)
    assert comments == [b"patronload patrons=8", b"patronload patrons=3"]


def test_latest_set_is_the_newest_load_of_a_type_processed_or_not():
    keys = [
        "alma/staff_2026-01-01_05.00.00.zip.processed",
        "alma/staff_2026-01-02_05.00.00_01.zip",
        "alma/staff_2026-01-02_05.00.00_02.zip.done",
        "alma/student_2026-01-03_05.00.00.zip",
        "alma/old/staff_2026-01-09_05.00.00.zip",
    ]
    assert latest_set(keys, "alma", "staff") == keys[1:3]
    assert latest_set(keys, "alma", "student") == [keys[3]]
    assert latest_set([], "alma", "staff") == []


def test_newest_load_time_reads_the_bucket_names_processed_ones_included():
    keys = ["alma/staff_2026-01-01_05.00.00.zip", "alma/staff_2026-01-02_05.00.07.zip.done", "alma/x.zip"]
    assert newest_load_time(keys, "alma", "staff") == dt.datetime(2026, 1, 2, 5, 0, 7, tzinfo=dt.UTC)
    assert newest_load_time(keys, "alma", "student") is None
