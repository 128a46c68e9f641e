"""Every command the README shows works from the project root, with DAGSTER_HOME unset (a
throwaway instance, as Dagster does) and set."""

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from patronload_assets.institutions.mit import synthetic
from patronload_assets.reports import summary

from .conftest import PROJECT_DIR, instance_state, load
from .environment import MATERIALIZE_ALL, embedded_environment

pytestmark = pytest.mark.slow
# Commands from the project root with DAGSTER_HOME unset make throwaway instances there: one at a
# time across pytest-xdist's workers (its loadgroup does not group under pytest 9), so each
# command's leftovers are its own.
ROOT_LOCK = PROJECT_DIR / ".local" / "project-root.lock"

BIN = Path(sys.executable).parent


def environment(tmp_path, home: Path | None) -> dict[str, str]:
    """The embedded defaults in ``tmp_path``, the venv's commands first on the PATH."""
    env = embedded_environment(tmp_path, home)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def throwaway_instances() -> set[Path]:
    return set(PROJECT_DIR.glob(".tmp_dagster_home_*"))


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``command`` from the project root. On return it and every process it started have ended, and
    none left a throwaway instance behind (a code server that outlives its command could write one)."""
    ROOT_LOCK.parent.mkdir(exist_ok=True)
    with open(ROOT_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed
        return run_alone(command, env)


def run_alone(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    before = throwaway_instances()
    with subprocess.Popen(
        command, cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group: its children are waited for below
    ) as process:  # fmt: skip
        stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, (command, stdout[-2000:], stderr[-3000:])
    deadline = time.monotonic() + 60
    while alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(process.pid), (command, "a process it started is still running after 60 s")
    assert not throwaway_instances() - before, command
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def alive(group: int) -> bool:
    """Whether a process of ``group`` still runs (a zombie, not yet reaped by init, does not)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            state, _, process_group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:  # ended while listed
            continue
        if int(process_group) == group and state != "Z":
            return True
    return False


@pytest.mark.parametrize(
    "command",
    [["dagster", "definitions", "validate", "-w", "workspace.yaml"], ["dg", "check", "defs"]],
    ids=["dagster definitions validate", "dg check defs"],
)
@pytest.mark.parametrize("home", [False, True], ids=["DAGSTER_HOME unset", "DAGSTER_HOME set"])
def test_definitions_validate_from_the_root(tmp_path, command, home):
    run(command, environment(tmp_path, tmp_path / "home" if home else None))


LOADS = {
    "dagster asset materialize": list(MATERIALIZE_ALL),
    "dagster job execute": ["dagster", "job", "execute", "-m", "patronload_assets", "-j", "patronload_job"],
    "dg launch": ["dg", "launch", "--assets", "*"],
}


@pytest.mark.parametrize(
    ("name", "home"),
    [("dagster asset materialize", False), ("dagster job execute", False), ("dg launch", True),
     ("dagster job execute", True)],
    ids=lambda value: value if isinstance(value, str) else f"DAGSTER_HOME {'set' if value else 'unset'}",
)  # fmt: skip
def test_the_whole_load_from_the_root(tmp_path, name, home):
    env = environment(tmp_path, tmp_path / "home" if home else None)
    run(LOADS[name], env)
    zips = sorted(path.name.split("_")[0] for path in (tmp_path / "bucket").glob("*.zip"))
    assert zips == ["staff", "student"]
    if home:
        with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
            [record] = instance.get_run_records()
            assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS


def test_the_summary_make_run_prints(tmp_path):
    warehouse = synthetic.create_warehouse(tmp_path / "dw.sqlite3", 200, 300)
    with dg.instance_for_test() as instance:
        assert summary.summary(instance, instance_state(instance)) == (False, ["No run on this instance."])
        assert load(warehouse, tmp_path / "bucket", instance).success
        succeeded, lines = summary.summary(instance, instance_state(instance))
    assert succeeded
    text = "\n".join(lines)
    [staff_zip] = (tmp_path / "bucket" / "alma").glob("staff_*.zip")
    assert f"zip: {staff_zip.resolve()}" in text
    assert "staff_zip: " in text and "student_zip: " in text and "rejected_missing_kerberos_name" in text
    assert "Changes since the last load:" in text and "staff_zip: no previous load: " in text
    assert len(lines) < 60  # short: the full log is in a file
