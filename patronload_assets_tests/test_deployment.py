"""What it ships, run as it ships: the image (Dockerfile) built and loading as its own non-root
user; every run of the production shape a container of that image, started by dagster-docker's
DockerRunLauncher (the local stand-in for EcsRunLauncher) over podman's Docker-compatible API.
`make test-deployment` (one test at a time: they share the image), not `make test`."""

import io
import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import dagster as dg
import pytest
from lxml import etree

from .conftest import PROJECT_DIR, load

pytestmark = [pytest.mark.slow, pytest.mark.deployment]

IMAGE = "localhost/patronload:test"
IMAGE_HOME = "/opt/dagster/app"  # the image's working folder, its user's own


def engine_environment() -> dict[str, str]:
    """The environment for podman: the project's containers.conf where runc is installed, as
    deploy/image/engine.sh sets it for make image."""
    environment = dict(os.environ)
    if "CONTAINERS_CONF" not in environment and shutil.which("runc"):
        environment["CONTAINERS_CONF"] = str(PROJECT_DIR / "deploy" / "image" / "containers.conf")
    return environment


def podman(*arguments: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["podman", *arguments], env=engine_environment(), capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        pytest.fail(f"podman {' '.join(arguments[:3])} ...: {done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def image():
    """The image, built by make image's script (its layers cached between runs)."""
    if not shutil.which("podman"):
        if os.environ.get("CI"):
            pytest.fail("podman is needed for the deployment tests: .ci/run installs it")
        pytest.skip("needs podman (apt-get install podman runc mmdebstrap)")
    started = time.monotonic()
    built = subprocess.run(
        ["sh", str(PROJECT_DIR / "deploy" / "image" / "build.sh")],
        env={**engine_environment(), "IMAGE": IMAGE, "CONTAINER_ENGINE": "podman"},
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    size = podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip()
    print(f"image {IMAGE}: {int(size) / 1e6:.0f} MB, built in {time.monotonic() - started:.0f} s")
    return IMAGE


def users_in(folder: Path) -> dict[str, list[str]]:
    """Primary ids by patron type, parsed from the zips in ``folder``."""
    found = {}
    for path in sorted(folder.rglob("*.zip")):
        with zipfile.ZipFile(path) as archive:
            found[path.name.split("_")[0]] = [
                user.findtext("primary_id")
                for name in archive.namelist()
                for user in etree.parse(io.BytesIO(archive.read(name))).getroot()
            ]
    return found


def test_the_image_loads_the_embedded_warehouse_as_its_own_non_root_user(image, tmp_path):
    """No network, no volume: `dagster definitions validate`, then a whole load of the embedded
    warehouse, inside a container as the image's user; its zips hold the users a load on the host
    writes from the same warehouse."""
    script = (
        "set -e; id -u; export DAGSTER_HOME=$PWD/home; mkdir -p $DAGSTER_HOME; "
        "dagster definitions validate -m patronload_assets; "
        "dagster asset materialize -m patronload_assets --select '*' > load.log 2>&1 || "
        "{ tail -c 3000 load.log; exit 1; }; "
        "python -m patronload_assets.summary"
    )
    name = f"patronload-embedded-{os.getpid()}"
    podman("create", "--name", name, "--network", "none", image, "sh", "-c", script)
    try:
        ran = podman("start", "--attach", name, timeout=900, check=False)
        assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
        assert ran.stdout.splitlines()[0] == "10001", ran.stdout[:200]  # the Dockerfile's user, not root
        podman("cp", f"{name}:{IMAGE_HOME}/.local/bucket", str(tmp_path / "container"))
        podman("cp", f"{name}:{IMAGE_HOME}/.local/warehouse.sqlite3", str(tmp_path / "warehouse.sqlite3"))
    finally:
        podman("rm", "--force", name, check=False)
    in_container = users_in(tmp_path / "container")
    assert sorted(in_container) == ["staff", "student"]

    # The same warehouse loaded on the host, by the code of this checkout.
    with dg.instance_for_test() as instance:
        assert load(tmp_path / "warehouse.sqlite3", tmp_path / "host", instance).success
    on_host = users_in(tmp_path / "host")
    assert len(in_container["staff"]) > 1000 and len(in_container["student"]) > 1000
    assert in_container == on_host
    assert "staff_zip:" in ran.stdout and "student_zip:" in ran.stdout


def test_every_run_a_container_of_the_image(image, podman_api, postgres, moto_endpoint, tmp_path, request):
    """The production-shape loads with dagster-docker's DockerRunLauncher: each run a container of
    the image on the host's network (PostgreSQL, the stand-in S3), with the settings the launcher
    passes and no folder of the host but the embedded warehouse's, read-only (the file that stands
    in for Oracle, which a task reaches over the network)."""
    from .test_production_shape import loads_in_the_production_shape

    def docker_launcher(setting_names: list[str]) -> dict:
        passed = [name for name in setting_names if name != "LOCAL_WAREHOUSE_PATH"]
        return {
            "module": "dagster_docker",
            "class": "DockerRunLauncher",
            "config": {
                "image": image,
                "network": "host",
                "env_vars": [*passed, "LOCAL_WAREHOUSE_PATH=/warehouse/dw.sqlite3"],
                "container_kwargs": {
                    "volumes": {str(tmp_path / "warehouse"): {"bind": "/warehouse", "mode": "ro"}},
                },
            },
        }

    host_tmp = Path(tempfile.mkdtemp(prefix="pl-host-"))
    request.addfinalizer(lambda: shutil.rmtree(host_tmp, ignore_errors=True))
    started = time.monotonic()
    loads_in_the_production_shape(
        docker_launcher, postgres, moto_endpoint, tmp_path, TMPDIR=str(host_tmp), DOCKER_HOST=podman_api
    )
    print(f"production shape, every run a container: {time.monotonic() - started:.0f} s")
    runs = podman(
        "ps", "--all", "--filter", "label=dagster/run_id", "--format", '{{index .Labels "dagster/run_id"}}'
    ).stdout.split()
    assert len(runs) >= 3, runs  # the three runs were containers of the image
    podman("rm", "--force", *runs, check=False)  # the launcher leaves them, as ECS leaves stopped tasks


@pytest.fixture
def podman_api(tmp_path):
    """podman's Docker-compatible API on a socket of the test's own."""
    socket = Path(tempfile.mkdtemp(prefix="pl-podman-")) / "podman.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        env=engine_environment(), stdout=subprocess.DEVNULL, stderr=open(tmp_path / "podman.log", "wb"),  # noqa: SIM115
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not socket.exists():
            assert service.poll() is None and time.monotonic() < deadline, (
                tmp_path / "podman.log"
            ).read_text()
            time.sleep(0.2)
        yield f"unix://{socket}"
    finally:
        service.terminate()
        service.wait(timeout=30)
        shutil.rmtree(socket.parent, ignore_errors=True)
