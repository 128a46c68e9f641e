"""Warehouse values to clean text (docs/patron-rules.md §1, §8).

Every warehouse value becomes either a trimmed string or ``None`` ("missing"). Control characters
(those XML 1.0 forbids, DEL, C1) and invisible formatting characters are removed here, once; line
breaks, tabs and every other kind of whitespace become single spaces; each repair is counted by kind
so it can be reported.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import re
from collections import Counter
from collections.abc import Iterable, Mapping

# Control characters: the C0 controls XML 1.0 forbids, DEL and the C1 controls, the byte-order mark,
# lone surrogates and the two non-characters XML excludes. VT, FF, the separators U+001C-U+001F and
# NEL (U+0085, a line break) are whitespace: they become spaces below.
CONTROL_CHARACTERS = "\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\ufeff\ud800-\udfff\ufffe\uffff"
# Invisible characters that change how a value displays or matches, never what it says: soft
# hyphen, zero-width space, word joiner, and the bidirectional embeddings, overrides and isolates
# (which can make a name display reversed). Zero-width joiner and non-joiner (U+200C, U+200D) stay:
# they spell names in Persian, Arabic and Indic scripts.
INVISIBLE_CHARACTERS = "\u00ad\u200b\u2060\u202a-\u202e\u2066-\u2069"
REMOVED = re.compile(f"[{CONTROL_CHARACTERS}{INVISIBLE_CHARACTERS}]")  # the schema check refuses them too
_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")
_INVISIBLE = re.compile(f"[{INVISIBLE_CHARACTERS}]")

# Any whitespace but a lone space: CR, LF, TAB, VT, FF, NEL, the line and paragraph separators,
# no-break and ideographic spaces... (what str.split splits on), or a run of spaces.
_IRREGULAR_SPACE = re.compile(r"[^\S ]| {2}")

REPAIR_CONTROL_CHARACTERS = "control_characters_removed"
REPAIR_INVISIBLE_CHARACTERS = "invisible_characters_removed"
REPAIR_WHITESPACE = "whitespace_normalised"
REPAIR_NON_TEXT = "non_text_values_converted"
REPAIR_UNDECODABLE_BYTES = "undecodable_bytes_replaced"


def to_text(value: object, repairs: Counter | None = None) -> str | None:
    """The text the warehouse meant by ``value``; ``None`` when it is missing.

    ``None``, ``''`` and whitespace-only values are missing. Whitespace inside a value becomes
    single spaces. Integral numbers lose any ``.0`` (``10000948.0`` -> ``"10000948"``); dates
    become ISO text; bytes are decoded as UTF-8.
    """
    if value is None:
        return None
    if type(value) is not str:
        value = _non_text_to_text(value, repairs)
        if value is None:
            return None
    text = value.strip()
    if not text:
        return None
    if REMOVED.search(text):
        if repairs is not None:  # each kind the value held, counted once
            for kind, pattern in (
                (REPAIR_CONTROL_CHARACTERS, _CONTROL),
                (REPAIR_INVISIBLE_CHARACTERS, _INVISIBLE),
            ):
                if pattern.search(text):
                    repairs[kind] += 1
        text = REMOVED.sub("", text).strip()
        if not text:
            return None
    if _IRREGULAR_SPACE.search(text):
        text = " ".join(text.split())
        if repairs is not None:
            repairs[REPAIR_WHITESPACE] += 1
        if not text:
            return None
    return text


def as_text(value: object, repairs: Counter | None = None) -> str | None:
    """A value of any type as the text the warehouse meant, untrimmed; ``None`` stays ``None``."""
    if value is None or type(value) is str:
        return value
    return _non_text_to_text(value, repairs)


def _non_text_to_text(value: object, repairs: Counter | None) -> str | None:
    if isinstance(value, str):  # a str subclass
        return str(value)
    if isinstance(value, float) and value != value:  # NaN: pandas' missing value
        return None
    if repairs is not None:
        repairs[REPAIR_NON_TEXT] += 1
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, decimal.Decimal):
        if value.is_nan():
            return None
        if value.is_finite() and value == value.to_integral_value():
            return str(int(value))
        return format(value, "f")
    if isinstance(value, _dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            if repairs is not None:
                repairs[REPAIR_UNDECODABLE_BYTES] += 1
            return raw.decode("utf-8", errors="replace")
    return str(value)


def clean_row(row: Mapping[str, object], repairs: Counter | None = None) -> dict[str, str | None]:
    """Every value of ``row`` through :func:`to_text`.

    The common case (text with nothing to repair) takes a fast path: trimmed here, with one scan
    of the whole row for forbidden characters and irregular whitespace instead of one per value.
    """
    cleaned = {}
    slow = False
    for column, value in row.items():
        if type(value) is str:
            cleaned[column] = value.strip() or None
        elif value is None:
            cleaned[column] = None
        else:
            slow = True
            break
    joined = "".join(filter(None, cleaned.values()))  # trimmed values: no run of spaces at a seam
    if slow or REMOVED.search(joined) or _IRREGULAR_SPACE.search(joined):
        return {column: to_text(value, repairs) for column, value in row.items()}
    return cleaned


def person_key(value: object) -> str | None:
    """A person's identity: the institution's person key (MIT: the Kerberos name), trimmed, any case (§2)."""
    text = to_text(value)
    return text.upper() if text is not None else None


def person_keys(values: Iterable[object]) -> set[str]:
    """The identities present among ``values``."""
    return {key for key in map(person_key, values) if key is not None}
