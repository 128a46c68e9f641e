"""A zip step's build folder on its own task's disk: ``{storage}/patronload_scratch/{run_id}-{type}``,
owner-only since it holds patron data, removed when the step ends; a folder left by a crashed run
(its process gone, or its run finished) is removed by the next step. Nothing here is read by
another process: what is, is in :mod:`state`."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

SCRATCH = "patronload_scratch"
OWNER_FILE = ".owner"


def owner_only_folder(root: Path, *parts: str) -> Path:
    """``root/parts...``, each made readable by its owner only: they hold patron data."""
    folder = root
    for part in parts:
        folder = folder / part
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask, and an old folder keeps its own
    return folder


def private_folder(instance: dg.DagsterInstance, *parts: str) -> Path:
    """A folder under the instance's storage, readable by its owner only."""
    return owner_only_folder(Path(instance.storage_directory()), *parts)


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
