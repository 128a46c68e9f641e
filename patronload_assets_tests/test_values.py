import datetime as dt
from collections import Counter
from decimal import Decimal

import pytest

from patronload_assets.domain.values import (
    REPAIR_CONTROL_CHARACTERS,
    REPAIR_INVISIBLE_CHARACTERS,
    REPAIR_NON_TEXT,
    REPAIR_WHITESPACE,
    clean_row,
    person_key,
    to_text,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, None),
        ("", None),
        ("  \t ", None),
        (" a b ", "a b"),
        (10000948, "10000948"),
        (10000948.0, "10000948"),
        (Decimal("10000948"), "10000948"),
        (Decimal("1.50"), "1.50"),
        (2.5, "2.5"),
        (float("nan"), None),
        (dt.date(2027, 1, 30), "2027-01-30"),
        (b"caf\xc3\xa9", "café"),
        ("\ufeffJane", "Jane"),
        ("Ja\x00ne\x1b", "Jane"),
        ("\x07", None),
        ("1 Main St\r\nApt 2", "1 Main St Apt 2"),
        ("tab\tand\nnewline", "tab and newline"),
        ("a\x0bb\x0cc\x1fd", "a b c d"),  # VT, FF, unit separator: whitespace XML forbids
        ("a\x85b\u2028c\u2029d", "a b c d"),  # NEL, line and paragraph separators
        ("\u00a0no-break\u3000ideographic  spaces ", "no-break ideographic spaces"),
        ("\r\n\t\u2028", None),
        ("Ok\x7fName", "OkName"),  # DEL
        ("C1\x80\x9b\x9f", "C1"),  # C1 controls (NEL, one of them, is a line break above)
        ("\u202eenaJ\u202c", "enaJ"),  # a right-to-left override: shown reversed
        ("\u202a\u202b\u202dx\u2066\u2067\u2068\u2069", "x"),  # embeddings, overrides, isolates
        ("Do\u200be\u2060\u00ad", "Doe"),  # zero-width space, word joiner, soft hyphen
        (
            "\u0645\u06cc\u200c\u0631\u0632\u0627",
            "\u0645\u06cc\u200c\u0631\u0632\u0627",
        ),  # ZWNJ spells Persian
        ("\u0915\u094d\u200d\u0937", "\u0915\u094d\u200d\u0937"),  # ZWJ stays in Devanagari
    ],
)
def test_to_text(value, text):
    assert to_text(value) == text


def test_repairs_are_counted_by_kind():
    repairs = Counter()
    to_text("a\x01b", repairs)
    to_text(12.0, repairs)
    to_text("plain", repairs)
    to_text("  plain and trimmed ", repairs)  # trimming the ends is not a repair
    to_text("two\nlines", repairs)
    assert repairs == {REPAIR_CONTROL_CHARACTERS: 1, REPAIR_NON_TEXT: 1, REPAIR_WHITESPACE: 1}
    to_text("Jane\u200b", repairs)
    to_text("\u202eJ\x7f", repairs)  # both kinds in one value: each counted
    assert repairs == {
        REPAIR_CONTROL_CHARACTERS: 2,
        REPAIR_INVISIBLE_CHARACTERS: 2,
        REPAIR_NON_TEXT: 1,
        REPAIR_WHITESPACE: 1,
    }


def test_a_row_with_a_line_break_leaves_the_fast_path_and_is_repaired():
    repairs = Counter()
    row = clean_row({"A": " x ", "B": "1 Main St\r\nApt 2", "C": None}, repairs)
    assert row == {"A": "x", "B": "1 Main St Apt 2", "C": None}
    assert repairs == {REPAIR_WHITESPACE: 1}


def test_kerberos_names_compare_case_insensitively():
    assert person_key(" jDoe ") == person_key("JDOE") == "JDOE"
    assert person_key("  ") is None


def test_a_warehouse_batch_becomes_text_columns_other_kinds_made_text_and_counted():
    """What a view returns, column by column: text and missing values as they are; numbers, dates
    and bytes (alone in a column, or among text) the text the warehouse meant, each counted."""
    from patronload_assets.state.frames import frame_from_batches

    repairs = Counter()
    batches = [
        [("a", 10000948, None, b"raw", "x", None), (" b ", 12, None, b"more", 2.5, None)],
        [("c", 7, None, b"last", dt.date(2026, 1, 31), "late")],
        [],
    ]
    frame = frame_from_batches(["TEXT", "NUMBER", "EMPTY", "BYTES", "MIXED", "NULLS_FIRST"], batches, repairs)
    assert all(str(dtype) == "string[pyarrow]" for dtype in frame.dtypes)
    as_lists = {column: [None if value is None else str(value) for value in frame[column].tolist()]
                for column in frame.columns}  # fmt: skip
    assert as_lists["TEXT"] == ["a", " b ", "c"]  # trimming is cleaning's, later
    assert as_lists["NUMBER"] == ["10000948", "12", "7"]
    assert frame["EMPTY"].isna().all()
    assert as_lists["BYTES"] == ["raw", "more", "last"]
    assert as_lists["MIXED"] == ["x", "2.5", "2026-01-31"]
    assert as_lists["NULLS_FIRST"][2] == "late" and frame["NULLS_FIRST"][:2].isna().all()
    assert repairs == {REPAIR_NON_TEXT: 3 + 3 + 2}  # the numbers, the bytes, the float and the date
