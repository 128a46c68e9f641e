import datetime as dt
from collections import Counter
from decimal import Decimal

import pytest

from patronload_assets.domain.values import (
    REPAIR_CONTROL_CHARACTERS,
    REPAIR_NON_TEXT,
    kerberos_key,
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
        ("tab\tand\nnewline", "tab\tand\nnewline"),
    ],
)
def test_to_text(value, text):
    assert to_text(value) == text


def test_repairs_are_counted_by_kind():
    repairs = Counter()
    to_text("a\x01b", repairs)
    to_text(12.0, repairs)
    to_text("plain", repairs)
    assert repairs == {REPAIR_CONTROL_CHARACTERS: 1, REPAIR_NON_TEXT: 1}


def test_kerberos_names_compare_case_insensitively():
    assert kerberos_key(" jDoe ") == kerberos_key("JDOE") == "JDOE"
    assert kerberos_key("  ") is None
