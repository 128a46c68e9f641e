"""What changed since the last load of a type (docs/patron-rules.md §11).

Each user of a load is kept as its primary id and one digest (CRC-32) per field group of the
bytes written for that group's elements: never a name, email, phone or address in clear. The
writer computes the digests as it renders (:class:`Fingerprints`); :func:`fingerprints_of_document`
computes the same digests from a file written earlier (the bucket's zips, for an instance that has
no baseline of its own). Comparing two loads by primary id gives the new, departed, changed and
unchanged patrons, and for the changed ones which groups changed.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
import zlib
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Set
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc

# The field groups a change is counted in, and the elements of each: children of <user>, and of
# <contact_info> for the three contact lists. The rolling expiry and purge dates belong to none.
GROUP_ELEMENTS = {
    "name": ("first_name", "middle_name", "last_name", "full_name",
             "pref_first_name", "pref_middle_name", "pref_last_name", "pref_name_suffix"),
    "email": ("emails",),
    "phone": ("phones",),
    "address": ("addresses",),
    "user_group": ("user_group",),
    "statistics": ("user_statistics",),
    "identifiers": ("user_identifiers",),
    "job": ("job_description", "job_category", "user_title"),
}  # fmt: skip
GROUPS = tuple(GROUP_ELEMENTS)
CONTACT_INFO = "contact_info"
CONTACT_GROUPS = frozenset({"emails", "phones", "addresses"})  # under <contact_info>
GROUP_OF_ELEMENT = {
    element: index for index, elements in enumerate(GROUP_ELEMENTS.values()) for element in elements
}
KEY_ELEMENT = "primary_id"

NEW, DEPARTED, CHANGED, UNCHANGED = "new", "departed", "changed", "unchanged"
MAX_DEPARTED_SHARE = 0.3  # more of the last load's patrons gone than this holds the type back


def primary_id_text(element: bytes) -> str:
    """The primary id of a written ``<primary_id>`` element as sent: its text, stripped. Loads are
    compared by it in upper case (Alma matches primary ids without regard to case)."""
    start, end = element.find(b">") + 1, element.rfind(b"<")
    text = element[start:end].decode("utf-8") if 0 < start <= end else ""
    return (html.unescape(text) if "&" in text else text).strip()


@dataclass
class Fingerprints:
    """Primary ids and group digests of a load's users, in the order they were written."""

    primary_ids: list[str] = field(default_factory=list)  # as sent
    digests: array = field(default_factory=lambda: array("I"))  # len(GROUPS) per user

    def __len__(self) -> int:
        return len(self.primary_ids)

    def add(self, key_element: bytes, digests: Iterable[int]) -> None:
        self.primary_ids.append(primary_id_text(key_element))
        self.digests.extend(digests)

    def without(self, positions: Set[int]) -> Fingerprints:
        """These fingerprints less the users at ``positions`` (0-based, in write order)."""
        if not positions:
            return self
        kept = Fingerprints()
        width = len(GROUPS)
        for index, primary_id in enumerate(self.primary_ids):
            if index not in positions:
                kept.primary_ids.append(primary_id)
                kept.digests.extend(self.digests[index * width : (index + 1) * width])
        return kept

    def matrix(self) -> np.ndarray:
        """The digests as a row per user, a column per group (a view, not a copy)."""
        return np.frombuffer(self.digests, dtype=np.uint32).reshape(len(self.primary_ids), len(GROUPS))

    def frame(self) -> pd.DataFrame:
        """One row per primary id in upper case (the first, should a load repeat one), a column per
        group."""
        frame = pd.DataFrame(self.matrix(), columns=list(GROUPS))
        frame.insert(0, KEY_ELEMENT, pd.Series(self.primary_ids, dtype=object).str.upper())
        return frame.drop_duplicates(KEY_ELEMENT).set_index(KEY_ELEMENT)


# -- digests of a written file --------------------------------------------------------------------

_TAG = re.compile(rb"""<(/?)([A-Za-z_][\w.:-]*)(?:[^>"']|"[^"]*"|'[^']*')*?(/?)>""")


def fingerprints_of_document(data: bytes) -> Iterator[tuple[bytes, list[int]]]:
    """(``<primary_id>`` element, digests) of each ``<user>`` of a ``<users>`` document, from its
    bytes as written: the digests the writer computed when it wrote them."""
    depth, path = 0, []
    spans: dict[str, tuple[int, int]] = {}  # open group element -> (its start, its group)
    key, digests = b"", [0] * len(GROUPS)
    for tag in _TAG.finditer(data):
        closing, name, empty = tag[1], tag[2].decode(), tag[3]
        if closing:
            depth -= 1
            opened = path.pop()
            if depth == 1 and opened == "user":
                yield key, digests
                key, digests = b"", [0] * len(GROUPS)
            elif opened in spans:
                start, group = spans.pop(opened)
                element = data[start : tag.end()]
                if group < 0:
                    key = element
                else:
                    digests[group] = zlib.crc32(element, digests[group])
            continue
        parent = path[-1] if path else ""
        # <users><user><first_name> opens at depth 2, <users><user><contact_info><emails> at 3
        group = group_of(parent, name) if depth == 2 + (parent == CONTACT_INFO) else None
        if empty:
            if group is not None:
                element = data[tag.start() : tag.end()]
                if group < 0:
                    key = element
                else:
                    digests[group] = zlib.crc32(element, digests[group])
            continue
        if group is not None:
            spans[name] = (tag.start(), group)
        path.append(name)
        depth += 1


def group_of(parent: str, name: str) -> int | None:
    """The group index of an element ``name`` under ``parent`` (-1: the primary id), or ``None``."""
    if parent == "user":
        if name == KEY_ELEMENT:
            return -1
        return None if name in CONTACT_GROUPS else GROUP_OF_ELEMENT.get(name)
    if parent == CONTACT_INFO and name in CONTACT_GROUPS:
        return GROUP_OF_ELEMENT[name]
    return None


# -- the baseline: what the last load sent --------------------------------------------------------


@dataclass
class Baseline:
    """The last successful load of a type: its fingerprints, when it was written, its zips."""

    fingerprints: Fingerprints
    load_time: dt.datetime
    keys: list[str]


def write_baseline(path: Path, baseline: Baseline) -> None:
    """Write ``baseline`` (owner-only; whole or not at all) as an Arrow file."""
    fingerprints, matrix = baseline.fingerprints, baseline.fingerprints.matrix()
    columns = {KEY_ELEMENT: pa.array(fingerprints.primary_ids, pa.string())}  # as sent
    columns.update((group, pa.array(matrix[:, index])) for index, group in enumerate(GROUPS))
    table = pa.table(columns).replace_schema_metadata(
        {"load_time": baseline.load_time.isoformat(), "keys": json.dumps(baseline.keys)}
    )
    partial = path.with_name(f".{path.name}.writing")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file, pa.ipc.new_file(file, table.schema) as writer:
        writer.write_table(table)
    os.replace(partial, path)


def read_baseline(path: Path) -> Baseline | None:
    """The baseline at ``path``; ``None`` when there is none or it cannot be read (the bucket's
    zips are the fallback)."""
    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        metadata = table.schema.metadata or {}
        load_time = dt.datetime.fromisoformat(metadata[b"load_time"].decode())
        keys = json.loads(metadata[b"keys"])
        fingerprints = Fingerprints(table.column(KEY_ELEMENT).to_pylist())
        matrix = np.column_stack([table.column(group).to_numpy().astype(np.uint32) for group in GROUPS])
        fingerprints.digests = array("I", matrix.reshape(-1).tobytes()) if len(matrix) else array("I")
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None
    return Baseline(fingerprints, load_time, keys)


# -- the comparison -------------------------------------------------------------------------------


@dataclass
class Comparison:
    """This load against the last: counts by kind and by group, and the patrons by primary id."""

    previous: int | None  # the last load's patrons; None when there was none
    previous_from: str
    counts: Counter  # new, departed, changed, unchanged
    changed_groups: Counter  # group -> changed patrons
    changes: pd.DataFrame  # primary_id, change, groups (new, departed and changed only)

    def metadata(self) -> dict[str, int]:
        return {
            **{f"patrons_{kind}": int(self.counts[kind]) for kind in (NEW, DEPARTED, CHANGED, UNCHANGED)},
            **{f"changed_{group}": int(self.changed_groups[group]) for group in GROUPS},
        }

    def departed_share(self) -> float:
        return self.counts[DEPARTED] / self.previous if self.previous else 0.0

    def describe(self) -> str:
        if self.previous is None:
            return f"no previous load: {self.counts[NEW]} new"
        groups = ", ".join(f"{group} {count}" for group, count in self.changed_groups.items() if count)
        return (
            f"{self.counts[NEW]} new, {self.counts[DEPARTED]} departed, {self.counts[CHANGED]} changed"
            f"{f' ({groups})' if groups else ''}, {self.counts[UNCHANGED]} unchanged "
            f"since {self.previous_from}"
        )


def compare(previous: Fingerprints | None, current: Fingerprints, previous_from: str = "") -> Comparison:
    """This load's users against the last load's, by primary id."""
    now = current.frame()
    if previous is None:
        changes = pd.DataFrame({KEY_ELEMENT: now.index, "change": NEW, "groups": ""})
        return Comparison(None, "none", Counter({NEW: len(now)}), Counter(), changes)
    before = previous.frame()
    stayed = now.index.intersection(before.index, sort=False)
    differs = now.loc[stayed, list(GROUPS)].to_numpy() != before.loc[stayed, list(GROUPS)].to_numpy()
    changed_rows = differs.any(axis=1)
    new_ids = now.index.difference(before.index, sort=False)
    departed_ids = before.index.difference(now.index, sort=False)
    groups_changed = [
        ",".join(group for group, hit in zip(GROUPS, row, strict=True) if hit)
        for row in differs[changed_rows]
    ]
    changes = pd.concat(
        [
            pd.DataFrame({KEY_ELEMENT: new_ids, "change": NEW, "groups": ""}),
            pd.DataFrame({KEY_ELEMENT: departed_ids, "change": DEPARTED, "groups": ""}),
            pd.DataFrame({KEY_ELEMENT: stayed[changed_rows], "change": CHANGED, "groups": groups_changed}),
        ],
        ignore_index=True,
    )
    counts = Counter(
        {
            NEW: len(new_ids),
            DEPARTED: len(departed_ids),
            CHANGED: int(changed_rows.sum()),
            UNCHANGED: int(len(stayed) - changed_rows.sum()),
        }
    )
    changed_groups = Counter(
        {group: int(hits) for group, hits in zip(GROUPS, differs.sum(axis=0), strict=True)}
    )
    return Comparison(len(before), previous_from, counts, changed_groups, changes)
