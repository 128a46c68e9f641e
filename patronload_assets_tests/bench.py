"""`make bench`: how fast the load is, measured, never asserted.

The institution is ``INSTITUTION``'s (default ``mit``): its synthetic warehouse and its rules.

1. The domain's build rate: synthetic rows in memory to zipped XML, one core, best of three.
2. The whole lineage from the command line (`dagster asset materialize`) on a generated SQLite
   warehouse of N patrons per type, twice (the second compares every user with the first):
   wall time, and the peak memory of the largest process. With ``--s3``, in the production shape:
   Alma's bucket and the state bucket on moto's S3 server over HTTP (frames, report files and
   baselines through S3), against the same loads on one machine's folders.

    python -m patronload_assets_tests.bench [--domain N] [--lineage N] [--skip-lineage] [--new-instance]
                                            [--s3]
"""

import argparse
import datetime as dt
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg

from patronload_assets import institutions
from patronload_assets.configuration import institution_setting
from patronload_assets.domain.load import Institution, build_zips
from patronload_assets_tests.environment import MATERIALIZE_ALL, embedded_environment

PROJECT_DIR = Path(__file__).resolve().parent.parent
RULES = institutions.load(institution_setting(os.environ))


def domain_rate(patrons: int, repeats: int = 3) -> None:
    institution = Institution.load(RULES)
    moment = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="patronload-bench-") as scratch:
        warehouse = RULES.create_warehouse(Path(scratch) / "dw.sqlite3", patrons, patrons)
        with sqlite3.connect(warehouse) as connection:
            connection.row_factory = sqlite3.Row
            read = {
                name: [dict(row) for row in connection.execute(RULES.query(name))]
                for name in ("staff", "student")
            }
        connection.close()
    for patron_type in (RULES.staff, RULES.student):
        rows = read[patron_type.name]
        best = float("inf")
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as scratch:
                started = time.process_time()
                result = build_zips(rows, len(rows), patron_type, institution, moment, Path(scratch))
                best = min(best, time.process_time() - started)
                size = sum(packaged.size for packaged in result.zips)
        print(
            f"domain {patron_type.name:7s}: {patrons:,} patrons in {best:.2f} s CPU "
            f"= {patrons / best:,.0f} patrons/s on one core ({size / patrons:.0f} zipped bytes a patron)"
        )


def lineage(patrons: int, fresh_instance: bool = False, s3: bool = False) -> None:
    """Two loads of the same warehouse into the same bucket: the first (no previous load), then
    the daily case (every user compared with the first load's baseline; nothing changed). With
    ``fresh_instance``, a third on a new instance, which reads its baseline back from the bucket.
    With ``s3``, the same loads again in the production shape's buckets."""
    with tempfile.TemporaryDirectory(prefix="patronload-bench-") as scratch:
        folder = Path(scratch)
        started = time.perf_counter()
        RULES.create_warehouse(folder / "dw.sqlite3", patrons, patrons)
        generated = time.perf_counter() - started
        print(f"warehouse: {patrons:,} staff + {patrons:,} students generated in {generated:.0f} s")
        shapes = [("one machine", folder / "home", {})]
        if s3:
            shapes.append(("S3 buckets", folder / "home-s3", _moto_buckets()))
        for shape, home, settings in shapes:
            loads = [("first load", home), ("second load", home)]
            if fresh_instance:
                loads.append(("new instance", home.with_name(home.name + "-new")))
            for label, instance_home in loads:
                _load(folder, instance_home, patrons, f"{shape}, {label}", settings)


def _moto_buckets() -> dict[str, str]:
    """Alma's bucket and the state bucket on moto's S3 server (over HTTP, in this process)."""
    from moto.server import ThreadedMotoServer

    from patronload_assets_tests.conftest import free_port

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line a request otherwise
    port = free_port()
    ThreadedMotoServer(ip_address="127.0.0.1", port=port).start()  # stops with the benchmark
    settings = {
        "S3_BUCKET_NAME": "alma-bucket", "S3_PREFIX": "alma", "STATE_BUCKET_NAME": "patronload-state",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
    }  # fmt: skip
    client = _s3_client(settings)
    for name in (settings["S3_BUCKET_NAME"], settings["STATE_BUCKET_NAME"]):
        client.create_bucket(Bucket=name)
    return settings


def _s3_client(settings: dict[str, str]):
    import boto3

    return boto3.client(
        "s3", endpoint_url=settings["S3_ENDPOINT_URL"], region_name="us-east-1",
        aws_access_key_id="bench", aws_secret_access_key="bench",
    )  # fmt: skip


def _bucket_zips(client, settings: dict[str, str]) -> list[dict]:
    """The zips in Alma's bucket on the S3 server, as listed (key and size)."""
    listed = client.list_objects_v2(Bucket=settings["S3_BUCKET_NAME"]).get("Contents", [])
    return [item for item in listed if item["Key"].endswith(".zip")]


def _zip_sizes(folder: Path, settings: dict[str, str]) -> list[int]:
    if not settings:
        return [path.stat().st_size for path in (folder / "bucket").rglob("*.zip")]
    return [item["Size"] for item in _bucket_zips(_s3_client(settings), settings)]


def _load(folder: Path, home: Path, patrons: int, label: str, settings: dict[str, str]) -> None:
    environment = embedded_environment(folder, home, **settings)
    command = [Path(sys.executable).parent / MATERIALIZE_ALL[0], *MATERIALIZE_ALL[1:]]
    started, started_at = time.perf_counter(), time.time()
    process = subprocess.Popen(
        command,
        cwd=PROJECT_DIR,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watcher = PeakMemory(process.pid)
    watcher.start()
    idle_before = _idle_seconds()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    idle = [after - before for before, after in zip(idle_before, _idle_seconds(), strict=True)]
    watcher.stop()
    # The largest single process of the run: the CLI, the forkserver, each step (MiB). Not getrusage's
    # children: a child forked from this process starts at its size, which the floor below grows.
    peak = watcher.peak_kib / 1024
    if process.returncode != 0:
        print(stderr[-4000:])
        raise SystemExit("the lineage failed")
    zips = _zip_sizes(folder, settings)
    print(
        f"{label}: {patrons:,} staff + {patrons:,} students through `dagster asset materialize` in "
        f"{wall:.1f} s wall, peak memory of the largest process {peak:,.0f} MiB; "
        f"{len(zips)} zips, {sum(zips) / 1e6:,.1f} MB"
    )
    os.environ["DAGSTER_HOME"] = str(home)  # the instance file reads it
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs(limit=1)
        stats = sorted(instance.get_run_step_stats(run.run_id), key=lambda stats: stats.start_time)
        steps = ", ".join(f"{stat.step_key} {stat.end_time - stat.start_time:.0f} s" for stat in stats)
        record = instance.get_run_record_by_id(run.run_id)
        # Where the wall time goes besides the steps: before the run starts (the command line
        # imports Dagster and the code location, makes the run), before the first step (the
        # executor and its forkserver start), and after the last step (the run ends, the process exits).
        phases = {
            "before the run": record.start_time - started_at,
            "run start to first step": stats[0].start_time - record.start_time,
            "steps (first start to last end)": max(stat.end_time for stat in stats) - stats[0].start_time,
            "after the last step": started_at + wall - max(stat.end_time for stat in stats),
        }
        checked, compared = [], []
        for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluation = entry.dagster_event.event_specific_data
            if evaluation.check_name == "schema":
                metadata = {name: value.value for name, value in evaluation.metadata.items()}
                checked.append(
                    f"{evaluation.asset_key.to_user_string()}: {metadata['patrons']:,} patrons, "
                    f"{metadata['users_checked']:,} users checked, "
                    f"{metadata['users_validated_by_xsd']:,} validated by {metadata['xsd']}"
                )
            elif evaluation.check_name == "departures":
                compared.append(f"{evaluation.asset_key.to_user_string()}: {evaluation.description}")
    print(f"  steps (start order): {steps}")
    print(f"  wall time: {'; '.join(f'{name} {seconds:.1f} s' for name, seconds in phases.items())}")
    print(
        f"  cores idle during the load: {', '.join(f'{seconds:.1f} s' for seconds in idle)} of {wall:.1f} s"
    )
    print(f"  schema check: {'; '.join(sorted(checked))}")
    floor, users = validate_once(folder, settings)
    print(
        f"  validate-once floor (decompress, parse and validate the load's {users:,} users with lxml in one "
        f"process): {floor:.1f} s; the load took {wall / floor:.2f} times the floor"
    )
    print(f"  departures check: {'; '.join(sorted(compared))}")


def _idle_seconds() -> list[float]:
    """Each core's idle (and I/O wait) seconds since boot, from /proc/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    idle = []
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0].startswith("cpu") and fields[0] != "cpu":
            idle.append((int(fields[4]) + int(fields[5])) / ticks)
    return idle


def validate_once(folder: Path, settings: dict[str, str]) -> tuple[float, int]:
    """The floor any validating loader pays once: each XML file of the load's zips decompressed,
    parsed and validated whole by the project's schema, one after another in this process. Zips in
    S3 are fetched first, untimed."""
    import zipfile

    from lxml import etree

    from patronload_assets.domain.checks import PROJECT_XSD

    schema = etree.XMLSchema(etree.parse(str(PROJECT_XSD)))
    with tempfile.TemporaryDirectory(prefix="patronload-floor-") as fetched:
        paths = sorted((folder / "bucket").rglob("*.zip"))
        if settings:
            client, paths = _s3_client(settings), []
            for item in _bucket_zips(client, settings):
                paths.append(Path(fetched) / Path(item["Key"]).name)
                client.download_file(settings["S3_BUCKET_NAME"], item["Key"], str(paths[-1]))
        started, users = time.perf_counter(), 0
        for path in paths:
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    document = etree.fromstring(archive.read(name))
                    if not schema.validate(document):
                        raise SystemExit(f"{name}: not valid: {schema.error_log.last_error}")
                    users += len(document)
                    del document
        return time.perf_counter() - started, users


class PeakMemory(threading.Thread):
    """The highest resident set (VmHWM) of any process descending from ``root``, read from /proc
    twice a second while the run goes: step processes are the forkserver's children, which
    getrusage does not see."""

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root, self.peak_kib, self._stop_event = root, 0, threading.Event()

    def _descendants(self) -> set[int]:
        parents = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                parents[int(stat.parent.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
        found, frontier = {self.root}, [self.root]
        while frontier:
            parent = frontier.pop()
            children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in found]
            found.update(children)
            frontier += children
        return found

    def run(self) -> None:
        while not self._stop_event.wait(0.5):
            for pid in self._descendants():
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak_kib = max(self.peak_kib, int(line.split()[1]))
                except OSError:
                    continue

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domain", type=int, default=100_000, help="patrons per type for the build rate")
    parser.add_argument("--lineage", type=int, default=200_000, help="patrons per type for the whole lineage")
    parser.add_argument("--skip-lineage", action="store_true")
    parser.add_argument(
        "--new-instance",
        action="store_true",
        help="a third load on a new instance (baseline from the bucket)",
    )
    parser.add_argument(
        "--s3", action="store_true", help="also in the production shape: both buckets on moto's S3 server"
    )
    arguments = parser.parse_args()
    domain_rate(arguments.domain)
    if not arguments.skip_lineage:
        lineage(arguments.lineage, arguments.new_instance, arguments.s3)


if __name__ == "__main__":
    main()
