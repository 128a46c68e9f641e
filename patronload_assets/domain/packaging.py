"""Zipped XML files as Alma's integration profile takes them (docs/patron-rules.md §8).

Records are streamed into the zip as they are rendered: memory does not grow with the number of
patrons. A type's users are split over several XML files when they pass ``users_per_file``, and
over several zips when a zip would pass Alma's limits.
"""

from __future__ import annotations

import datetime as dt
import errno
import fnmatch
import itertools
import math
import re
import shutil
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Set
from dataclasses import dataclass
from pathlib import Path

from .alma_xml import USERS_CLOSE, USERS_OPEN, XML_DECLARATION

try:  # ISA-L writes the same deflate stream as zlib, about five times faster here
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - a platform without ISA-L wheels
    _deflate = zlib
DEFLATE_LEVEL = 1  # the fastest level of zlib; ISA-L's levels are 0-3 and 1 compresses as zlib's 1


class PackagingError(ValueError):
    """A load that Alma would refuse; raised before anything is uploaded."""


@dataclass(frozen=True)
class AlmaLimits:
    """Alma's limits per load, and how many users go in one XML file."""

    max_zip_bytes: int = 4 * 1024**3
    max_files_per_zip: int = 50
    max_zips_per_load: int = 20
    users_per_file: int = 50_000


@dataclass(frozen=True)
class PackagedZip:
    path: Path
    name: str
    patrons: int
    xml_files: tuple[str, ...]

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def timestamp(moment: dt.datetime) -> str:
    """``YYYY-MM-DD_HH.MM.SS`` in UTC."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d_%H.%M.%S")


def zip_names(patron_type: str, moment: dt.datetime, zips: int) -> list[str]:
    """``{type}_{timestamp}`` for one zip; numbered ``_01``, ``_02``... for a set."""
    base = f"{patron_type}_{timestamp(moment)}"
    return [base] if zips == 1 else [f"{base}_{index:02d}" for index in range(1, zips + 1)]


def plan_files(patrons: int, limits: AlmaLimits) -> list[list[int]]:
    """The users per XML file, grouped per zip. Refuses a load over Alma's zip count."""
    files = max(1, math.ceil(patrons / limits.users_per_file))
    zips = math.ceil(files / limits.max_files_per_zip)
    if zips > limits.max_zips_per_load:
        raise PackagingError(
            f"{patrons} patrons need {files} XML files of at most {limits.users_per_file} users, "
            f"{zips} zips of at most {limits.max_files_per_zip} files: Alma takes at most "
            f"{limits.max_zips_per_load} zips in one load"
        )
    sizes = [limits.users_per_file] * (files - 1) + [patrons - limits.users_per_file * (files - 1)]
    per_zip = limits.max_files_per_zip
    return [sizes[start : start + per_zip] for start in range(0, files, per_zip)]


def write_zips(
    users: Iterable[bytes],
    patrons: int,
    patron_type: str,
    moment: dt.datetime,
    directory: Path,
    limits: AlmaLimits | None = None,
) -> list[PackagedZip]:
    """Write ``patrons`` rendered ``<user>`` elements (UTF-8) into the zips of one type.

    ``patrons`` is known beforehand (the selected rows), so a load over Alma's limits is
    refused before anything is written. A zip over Alma's size limit is refused after writing,
    still before anything is uploaded.
    """
    limits = limits or AlmaLimits()
    plan = plan_files(patrons, limits)
    written = [0]

    def counted(users: Iterable[bytes]) -> Iterator[bytes]:
        for user in users:
            written[0] += 1
            yield user

    stream = counted(users)
    try:
        return _write_planned(stream, patrons, patron_type, moment, directory, limits, plan)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFullError(directory, written[0], patrons, patron_type) from error


class DiskFullError(OSError):
    """The build folder's disk filled: where, and about how many more bytes the zips needed."""

    def __init__(self, directory: Path, users_written: int, patrons: int, patron_type: str):
        stored = sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
        free = shutil.disk_usage(directory).free
        # The bytes a user took so far, times the users still to write: what the disk lacked.
        lacked = round(stored / users_written * (patrons - users_written)) if users_written else None
        about = f"about {lacked} more bytes were needed" if lacked else "the first user did not fit"
        super().__init__(
            errno.ENOSPC,
            f"no space left in the build folder {directory} after {stored} bytes "
            f"({users_written} of {patrons} {patron_type} users written): {about}; {free} bytes free on its "
            "disk. Give the step more disk",
        )
        self.lacked_bytes = lacked


def _write_planned(stream, patrons, patron_type, moment, directory, limits, plan) -> list[PackagedZip]:
    packaged: list[PackagedZip] = []
    for name, file_sizes in zip(zip_names(patron_type, moment, len(plan)), plan, strict=True):
        path = directory / f"{name}.zip"
        xml_names = (
            [f"{name}.xml"]
            if len(file_sizes) == 1
            else [f"{name}_{index:03d}.xml" for index in range(1, len(file_sizes) + 1)]
        )
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.comment = patron_count_comment(sum(file_sizes))
            for xml_name, size in zip(xml_names, file_sizes, strict=True):
                with archive.open(xml_name, "w", force_zip64=True) as entry:
                    _use_fast_deflate(entry)
                    _write_xml(entry, stream, size)
        packaged.append(PackagedZip(path, path.name, sum(file_sizes), tuple(xml_names)))
        if path.stat().st_size > limits.max_zip_bytes:
            raise PackagingError(
                f"{path.name} is {path.stat().st_size} bytes: Alma takes zips of at most "
                f"{limits.max_zip_bytes} bytes; lower users_per_file"
            )
    leftover = next(stream, None)
    if leftover is not None:
        raise PackagingError(f"more {patron_type} users than the {patrons} planned")
    return packaged


def _use_fast_deflate(entry) -> None:
    """Give zipfile's entry writer the faster deflate (a raw stream, as zipfile's own)."""
    if _deflate is not zlib and getattr(entry, "_compressor", None) is not None:
        entry._compressor = _deflate.compressobj(DEFLATE_LEVEL, _deflate.DEFLATED, -15)


def _write_xml(entry, stream, count: int, batch: int = 2000) -> None:
    """One XML document of ``count`` users (UTF-8 bytes), written in batches; no byte-order mark."""
    entry.write((XML_DECLARATION + USERS_OPEN).encode("utf-8"))
    written = 0
    while written < count:
        chunk = list(itertools.islice(stream, min(batch, count - written)))
        if len(chunk) < min(batch, count - written):
            raise PackagingError(f"fewer users than the {count} planned for this file")
        chunk.append(b"")
        entry.write(b"\n".join(chunk))
        written += len(chunk) - 1
    entry.write(USERS_CLOSE.encode("utf-8"))


def patron_count_comment(patrons: int) -> bytes:
    """The zip comment that records how many patrons a zip holds (``unzip -z`` shows it): for a
    person looking at the bucket; the load reads counts from its baseline."""
    return f"patronload patrons={patrons}".encode()


def _load_time(name: str, patron_type: str, processed: bool) -> str | None:
    """The ``YYYY-MM-DD_HH.MM.SS`` of a zip name of this type (sortable as text); ``None`` for
    another name. ``processed``: also a name Alma extended after processing the zip."""
    match = _ZIP_NAME.match(name)
    if not match or match["type"] != patron_type or (match["rest"] and not processed):
        return None
    return match["time"]


_ZIP_NAME = re.compile(
    r"(?P<type>[a-z]+)_(?P<time>\d{4}-\d{2}-\d{2}_\d{2}\.\d{2}\.\d{2})(?:_\d+)?\.zip(?P<rest>.*)\Z", re.DOTALL
)


def _names_under(keys: Iterable[str], prefix: str) -> Iterable[tuple[str, str]]:
    """(key, name) of the keys directly under ``prefix``."""
    folder = object_key(prefix, "")  # "alma/", or "" with no prefix
    for key in keys:
        if key.startswith(folder) and "/" not in key[len(folder) :]:
            yield key, key[len(folder) :]


def latest_set(keys: Iterable[str], prefix: str, patron_type: str) -> list[str]:
    """The keys of the newest load of a type directly under ``prefix``, processed ones included
    (Alma renames a zip it has processed, it keeps its name's start)."""
    loads: dict[str, list[str]] = {}
    for key, name in _names_under(keys, prefix):
        moment = _load_time(name, patron_type, processed=True)
        if moment is not None:
            loads.setdefault(moment, []).append(key)
    return sorted(loads[max(loads)]) if loads else []


def newest_load_time(keys: Iterable[str], prefix: str, patron_type: str) -> dt.datetime | None:
    """When the newest load of a type directly under ``prefix`` was written (the UTC time in its
    name), processed ones included; ``None`` when there is none."""
    times = [_load_time(name, patron_type, processed=True) for _, name in _names_under(keys, prefix)]
    newest = max(filter(None, times), default=None)
    return dt.datetime.strptime(newest, "%Y-%m-%d_%H.%M.%S").replace(tzinfo=dt.UTC) if newest else None


def stale_keys(
    existing: Iterable[str], prefix: str, patron_type: str, keep: Iterable[str], uploaded: dt.datetime
) -> list[str]:
    """Keys of ``{type}_*.zip`` directly under ``prefix`` older than this run's set (``keep``,
    uploaded at ``uploaded``): never a newer run's, so two loads at once never leave a type without
    its newest zip. A ``{type}_*.zip`` without a time in its name is stale too.

    Alma renames what it has processed (the name no longer ends in ``.zip``): those stay.
    """
    keep, this_load = set(keep), timestamp(uploaded)
    stale = []
    for key, name in _names_under(existing, prefix):
        if key in keep or not fnmatch.fnmatchcase(name, f"{patron_type}_*.zip"):
            continue
        moment = _load_time(name, patron_type, processed=False)
        if moment is None or moment < this_load:
            stale.append(key)
    return sorted(stale)


def newer_keys(existing: Iterable[str], prefix: str, patron_type: str, uploaded: dt.datetime) -> list[str]:
    """Keys of a load of this type directly under ``prefix`` newer than one uploaded at
    ``uploaded``, processed ones included: a run that finds one has been overtaken."""
    this_load = timestamp(uploaded)
    return sorted(
        key
        for key, name in _names_under(existing, prefix)
        if (_load_time(name, patron_type, processed=True) or "") > this_load
    )


def rewrite_without(zips: list[PackagedZip], left_out: Set[tuple[str, int]]) -> list[PackagedZip]:
    """The zips again, without the users at ``left_out`` ((XML file, 1-based position) pairs); the
    other users are written back byte for byte (as the writer wrote them, so their digests hold)."""
    rewritten = []
    for packaged in zips:
        if not any(name == xml_file for xml_file, _ in left_out for name in packaged.xml_files):
            rewritten.append(packaged)
            continue
        partial = packaged.path.with_name(f".{packaged.path.name}.rewriting")
        patrons = 0
        with (
            zipfile.ZipFile(packaged.path) as source,
            zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as target,
        ):
            for name in packaged.xml_files:
                with target.open(name, "w", force_zip64=True) as entry:
                    _use_fast_deflate(entry)
                    entry.write((XML_DECLARATION + USERS_OPEN).encode("utf-8"))
                    for position, user in enumerate(_users_of(source, name), start=1):
                        if (name, position) not in left_out:
                            entry.write(user + b"\n")
                            patrons += 1
                    entry.write(USERS_CLOSE.encode("utf-8"))
            target.comment = patron_count_comment(patrons)
        partial.replace(packaged.path)
        rewritten.append(PackagedZip(packaged.path, packaged.name, patrons, packaged.xml_files))
    return rewritten


_USER_ELEMENT = re.compile(rb"<user[\s>].*?</user>|<user/>", re.DOTALL)


def unusual_markup(data: bytes) -> bool:
    """Comments, CDATA, processing instructions or a document type: markup that users cut from the
    bytes (the schema check's fast path, a rewrite) would not read as it is."""
    return (b"!" in data and b"<!" in data) or (b"?" in data and b"<?" in data)


def _users_of(source: zipfile.ZipFile, name: str) -> Iterable[bytes]:
    """The ``<user>`` elements of an XML file of the zip, in order: their bytes as written, or, in
    a file with comments, CDATA or processing instructions, as parsed and serialised again."""
    from lxml import etree

    data = source.read(name)
    body = data[data.find(b"?>") + 2 :] if data.startswith(b"<?xml") else data
    if not unusual_markup(body):
        yield from (match.group() for match in _USER_ELEMENT.finditer(body))
        return
    with source.open(name) as stream:
        parsing = etree.iterparse(stream, events=("end",), tag="user", huge_tree=True)
        for _, user in parsing:
            yield etree.tostring(user, encoding="utf-8", with_tail=False)
            user.clear(keep_tail=True)
            while user.getprevious() is not None:
                del user.getparent()[0]


def object_key(prefix: str, name: str) -> str:
    """``{prefix}/{name}``; no leading slash when the prefix is empty."""
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name
