import os

import dagster as dg

from . import assets
from .frames import ArrowFrameIOManager
from .jobs import patronload_job, warehouse_connection_test
from .schedules import daily_patronload
from .sensors import failure_report, success_report
from .settings import init_sentry, resources

init_sentry(os.environ)

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    jobs=[patronload_job, warehouse_connection_test],
    schedules=[daily_patronload],
    sensors=[success_report, failure_report],
    resources={**resources(), "io_manager": ArrowFrameIOManager()},
)
