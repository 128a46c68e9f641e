"""What more than one process reads: the frames passed between assets, the files a run report
attaches, and each type's baseline (docs/patron-rules.md §11).

In production every run is its own task with its own disk, and the sensors run in the code
server's task: what one process writes and another reads lives where both can reach it. With
``STATE_BUCKET_NAME`` set that is an S3 bucket of the institution's own (never Alma's bucket, which
Ex Libris reads), under ``STATE_PREFIX`` (``patronload/``), every object encrypted at rest; unset,
the instance's storage folder, owner-only. Both are a :class:`Bucket` (the same classes that put
the zips where Alma polls), so nothing above this module knows which is in use:

- ``frames/{asset}.arrow``: the frames between assets (zstd Arrow), read back column by column;
- ``reports/{run_id}/{name}.csv``: what a run report attaches (users left out, changes), removed
  after ``report_retention_days``;
- ``baselines/{type}.arrow``: a type's last successful load, primary ids and digests only.

Dagster's ``UPathIOManager`` would need ``s3fs`` for S3 paths; every s3fs of the last years needs
aiobotocore, whose botocore pin excludes the boto3 that dagster-aws installs, so frames go through
the same S3 client as the bucket.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.feather as feather
from pydantic import Field, PrivateAttr

from .. import institutions
from ..domain import changes
from ..domain.packaging import object_key
from ..resources.bucket import Bucket, LocalBucket, S3Bucket
from .scratch import owner_only_folder

FRAMES, REPORTS, BASELINES = "frames", "reports", "baselines"
INSTANCE_FOLDER = "patronload"  # under the instance's storage folder
REPORT_RETENTION_DAYS = 30


class StateStore(dg.ConfigurableResource):
    """Objects by key (``frames/...``, ``reports/...``, ``baselines/...``) in a :class:`Bucket`."""

    report_retention_days: int = Field(
        default=REPORT_RETENTION_DAYS, gt=0, description="Days a run's report files are kept."
    )

    def objects(self) -> Bucket:
        raise NotImplementedError

    def describe(self) -> str:
        """Where the state is, for logs: a bucket and prefix or a folder, never a credential."""
        return self.objects().url(self._key(""))

    def _key(self, name: str) -> str:
        return object_key(self.objects().prefix, name)

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """A file on this disk to write ``name`` into; stored (whole or not at all) when the block
        ends without an error."""
        with tempfile.TemporaryDirectory(prefix="patronload-state-") as folder:
            path = Path(folder) / Path(name).name
            yield path
            self.objects().upload(path, self._key(name))

    def local_copy(self, name: str) -> contextlib.AbstractContextManager[Path | None]:
        """The object ``name`` as a file on this disk while the block runs (``None`` when missing)."""
        return self.objects().local_file(self._key(name))

    def listing(self, folder: str) -> dict[str, dt.datetime]:
        """Every object under ``folder`` by name (relative to the state's prefix), with when it was
        last written."""
        start = len(self._key(""))
        return {key[start:]: moment for key, moment in self.objects().list_objects(self._key(folder)).items()}

    def delete(self, names: Iterable[str]) -> None:
        self.objects().delete([self._key(name) for name in names])

    # -- the files a run report attaches ----------------------------------------------------------

    def write_report_file(
        self, run_id: str, name: str, header: Iterable[str], rows: Iterable[Iterable]
    ) -> None:
        """A CSV the run report attaches (``name``), kept for ``report_retention_days``."""
        with (
            self.writing(f"{REPORTS}/{run_id}/{name}") as path,
            open(path, "w", encoding="utf-8", newline="") as file,
        ):
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)

    def read_report_files(self, run_id: str) -> dict[str, str]:
        """What a report attaches: each CSV the run (or a sensor, by its label) left, by name."""
        files = {}
        for name in sorted(name for name in self.listing(f"{REPORTS}/{run_id}/") if name.endswith(".csv")):
            with self.local_copy(name) as path:
                if path is not None:
                    files[Path(name).name] = path.read_text(encoding="utf-8")
        return files

    def remove_expired_reports(self, now: dt.datetime | None = None) -> list[str]:
        """Remove report files older than ``report_retention_days``; their names."""
        cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=self.report_retention_days)
        expired = sorted(name for name, moment in self.listing(f"{REPORTS}/").items() if moment < cutoff)
        self.delete(expired)
        return expired

    # -- baselines ---------------------------------------------------------------------------------

    def write_baseline(self, patron_type: str, baseline: changes.Baseline) -> None:
        with self.writing(f"{BASELINES}/{patron_type}.arrow") as path:
            changes.write_baseline(path, baseline)

    def read_baseline(self, patron_type: str) -> changes.Baseline | None:
        """The type's last successful load kept here; ``None`` when there is none or it cannot be
        read (the bucket's newest zips are then the fallback)."""
        with self.local_copy(f"{BASELINES}/{patron_type}.arrow") as path:
            return changes.read_baseline(path) if path is not None else None

    # -- frames --------------------------------------------------------------------------------------

    def write_frame(self, name: str, frame: pd.DataFrame) -> int:
        """Store a frame as a zstd-compressed Arrow (Feather) file; its stored size."""
        with self.writing(f"{FRAMES}/{name}.arrow") as path:
            feather.write_feather(frame, str(path), compression="zstd")
            size = path.stat().st_size
        return size

    def read_frame(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        """A stored frame, or only its ``columns``: the others are never decompressed."""
        with self.local_copy(f"{FRAMES}/{name}.arrow") as path:
            if path is None:
                raise FileNotFoundError(f"no frame {name} in {self.describe()}: materialize it first")
            table = feather.read_table(str(path), columns=columns, memory_map=True)
            return table.to_pandas(types_mapper=pd.ArrowDtype)


class InstanceState(StateStore):
    """The instance's storage folder (``{storage}/patronload``), owner-only: one machine, or
    processes sharing a disk."""

    base_dir: str | None = Field(default=None, description="Instead of the instance's storage folder.")
    folder: str = Field(default="", description="A subfolder: an institution's own beside another's.")
    _bucket: LocalBucket | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.base_dir is None and context.instance is not None:
            self._bucket = self._folder(context.instance.storage_directory())

    def _folder(self, storage: str) -> LocalBucket:
        directory = owner_only_folder(Path(storage), INSTANCE_FOLDER)
        return LocalBucket(directory=str(directory), prefix=self.folder)

    def objects(self) -> Bucket:
        if self._bucket is None:
            if self.base_dir is None:
                raise RuntimeError("InstanceState needs a Dagster instance or base_dir")
            self._bucket = self._folder(self.base_dir)
        return self._bucket


class BucketState(StateStore):
    """An S3 bucket of the institution's own: every task of the deployment reads it."""

    bucket: S3Bucket

    def objects(self) -> Bucket:
        return self.bucket


IDENTIFYING = "identifying"  # an input's columns: the institution's person key and identifier columns


class FrameIOManager(dg.ConfigurableIOManager):
    """Frames between assets as zstd Arrow files in the state store; an input whose metadata names
    ``columns`` reads only those (:data:`IDENTIFYING`: the institution's that say who a row is)."""

    state: StateStore
    institution: str = institutions.DEFAULT

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        size = self.state.write_frame(_name(context.asset_key), obj)
        context.add_output_metadata({"stored_bytes": size})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        columns = (context.definition_metadata or {}).get("columns")
        if columns == IDENTIFYING:
            rules = institutions.load(self.institution)
            columns = list(dict.fromkeys([rules.person_key, *rules.identifier_columns]))
        return self.state.read_frame(_name(context.asset_key), columns)


def _name(asset_key: dg.AssetKey) -> str:
    return "__".join(asset_key.path)
