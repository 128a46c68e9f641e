"""The image's install: a wheel of the project (not an editable checkout) carries everything the
code reads, and runs the whole load from a folder that is not the checkout."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from .conftest import PROJECT_DIR
from .environment import DEPLOYMENT_SETTINGS

pytestmark = pytest.mark.slow  # a daemon, a server or a whole install

SOURCES = ("setup.py", "patronload_assets", "sql")  # what the Dockerfile copies to build the wheel


def build_wheel(folder: Path) -> Path:
    """A wheel built from a copy of the sources (the build writes nothing into the checkout)."""
    source = folder / "source"
    source.mkdir()
    for name in SOURCES:
        if (PROJECT_DIR / name).is_dir():
            shutil.copytree(PROJECT_DIR / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(PROJECT_DIR / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder / "wheels"), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    [wheel] = (folder / "wheels").glob("patronload_assets-*.whl")
    return wheel


def test_the_wheel_carries_the_sql_templates_tables_and_schema_and_loads_outside_the_checkout(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {
        "patronload_assets/sql/mit/staff.sql",
        "patronload_assets/sql/mit/student.sql",
        "patronload_assets/institutions/mit/staff_template.xml",
        "patronload_assets/institutions/mit/student_departments.json",
        "patronload_assets/schema/patronload_users.xsd",
    } <= names
    assert not [name for name in names if name.startswith("patronload_assets_tests")]

    # A fresh virtual environment outside the checkout, the wheel installed (not editable); the
    # dependencies are the test environment's, added after its own site-packages, where neither
    # the checkout nor its editable install is visible.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(site_packages, "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "work"
    work.mkdir()
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith((*DEPLOYMENT_SETTINGS, "LOCAL_", "PYTHONPATH"))
    }
    where = subprocess.run(
        [str(python), "-c", "import patronload_assets; print(patronload_assets.__file__)"],
        cwd=work, env=environment, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(site_packages), where
    completed = subprocess.run(
        [str(python), "-m", "dagster", "asset", "materialize", "-m", "patronload_assets", "--select", "*"],
        cwd=work, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    # The embedded defaults are in the working folder, not beside the installed package.
    assert (work / ".local" / "warehouse.sqlite3").is_file()
    zips = sorted(path.name.split("_")[0] for path in (work / ".local" / "bucket").glob("*.zip"))
    assert zips == ["staff", "student"]
    assert not list(Path(site_packages).rglob(".local"))
