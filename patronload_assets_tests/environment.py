"""The environment a command-line test or the benchmark runs `dagster` in: nothing of this
machine's deployment settings, the embedded warehouse, bucket and outbox in a folder of its own."""

import os
import shutil
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
# The whole load from the command line, as `make run` and the operators run it.
MATERIALIZE_ALL = ("dagster", "asset", "materialize", "-m", "patronload_assets", "--select", "*")
DEPLOYMENT_SETTINGS = (
    "DATA_WAREHOUSE", "DATAWAREHOUSE", "S3_", "SES_", "WORKSPACE", "SENTRY", "LOAD_", "ALMA_", "DAGSTER_HOME",
)  # fmt: skip


def embedded_environment(folder: Path, home: Path | None = None, **settings: str) -> dict[str, str]:
    """``DAGSTER_HOME`` only when ``home`` is given (a new instance with the project's dagster.yaml)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(DEPLOYMENT_SETTINGS)}
    environment.update(
        LOCAL_WAREHOUSE_PATH=str(folder / "dw.sqlite3"),
        LOCAL_BUCKET_DIR=str(folder / "bucket"),
        LOCAL_OUTBOX_DIR=str(folder / "outbox"),
    )
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_DIR / "dagster.yaml", home / "dagster.yaml")
        environment["DAGSTER_HOME"] = str(home)
    environment.update(settings)
    return environment
