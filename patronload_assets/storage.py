"""Files a run keeps on the instance's storage: owner-only folders, since they hold patron data.

- ``patronload_scratch/{run_id}-{type}``: a zip step's build folder, removed when the step ends; a
  folder left by a crashed run (its process gone, or its run finished) is removed by the next step.
- ``patronload_reports/{run_id}``: what the run report attaches (the users left out, new, departed
  and changed, by primary id), read by the report sensors.
- ``patronload_baselines/{type}.arrow``: the last successful load of a type, by primary id and
  digests of its field groups (docs/patron-rules.md §11), which the next load compares with.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

import dagster as dg

SCRATCH, REPORTS, BASELINES = "patronload_scratch", "patronload_reports", "patronload_baselines"
OWNER_FILE = ".owner"


def private_folder(instance: dg.DagsterInstance, *parts: str) -> Path:
    """A folder under the instance's storage, readable by its owner only."""
    folder = Path(instance.storage_directory())
    for part in parts:
        folder = folder / part
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
    return folder


def baseline_path(instance: dg.DagsterInstance, patron_type: str) -> Path:
    """Where the last successful load of a type is kept for the next one to compare with."""
    return private_folder(instance, BASELINES) / f"{patron_type}.arrow"


def scratch_folder(instance: dg.DagsterInstance, run_id: str, name: str) -> Path:
    """A new build folder for one step of a run, after removing what crashed runs left."""
    remove_abandoned_scratch(instance)
    folder = private_folder(instance, SCRATCH, f"{run_id}-{name}")
    (folder / OWNER_FILE).write_text(f"{socket.gethostname()} {os.getpid()}")
    return folder


@contextlib.contextmanager
def scratch(instance: dg.DagsterInstance, run_id: str, name: str) -> Iterator[Path]:
    """A step's build folder (:func:`scratch_folder`), removed when the step is done with it."""
    folder = scratch_folder(instance, run_id, name)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _abandoned(instance: dg.DagsterInstance, folder: Path) -> bool:
    owner = (folder / OWNER_FILE).read_text().split() if (folder / OWNER_FILE).exists() else []
    if len(owner) == 2 and owner[0] == socket.gethostname():
        try:
            os.kill(int(owner[1]), 0)
        except ProcessLookupError:
            return True  # its process is gone: killed, or crashed
        except (PermissionError, ValueError):
            pass
        else:
            return False  # its process is still at work
    run = instance.get_run_by_id(folder.name[:36])
    return run is None or run.is_finished


def remove_abandoned_scratch(instance: dg.DagsterInstance) -> list[str]:
    """Remove the build folders of runs that are over or whose process is gone; their names."""
    root = Path(instance.storage_directory()) / SCRATCH
    removed = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.is_dir() and _abandoned(instance, folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


def write_report_file(
    instance: dg.DagsterInstance, run_id: str, name: str, header: Iterable[str], rows: Iterable[Iterable]
) -> Path:
    """A CSV the run report attaches (``name``), owner-only."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path = private_folder(instance, REPORTS, run_id) / name
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text.getvalue())
    return path


def report_files(instance: dg.DagsterInstance, run_id: str) -> list[Path]:
    folder = Path(instance.storage_directory()) / REPORTS / run_id
    return sorted(folder.glob("*.csv")) if folder.is_dir() else []


def read_report_files(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """What a report attaches: each CSV of the folder by name."""
    return {path.name: path.read_text(encoding="utf-8") for path in report_files(instance, run_id)}
