import dagster as dg

from . import assets
from .jobs import patronload_job
from .schedules import daily_patronload
from .settings import resources

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    jobs=[patronload_job],
    schedules=[daily_patronload],
    resources=resources(),
)
