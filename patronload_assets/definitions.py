import os

import dagster as dg

from .alma.first_day import alma_connection_test
from .alma.now import patronload_now_job
from .alma.verdict import alma_job_sensor, alma_sis_job
from .load import assets
from .load.jobs import patronload_job, patronload_preview, warehouse_connection_test
from .load.schedules import daily_patronload
from .reports.overdue import overdue_report
from .reports.sensors import failure_report, success_report
from .settings import init_sentry, resources

init_sentry(os.environ)
configured = resources()
# Alma's verdict (docs/patron-rules.md §12) only with ALMA_API_KEY set: without it nothing changes.
alma = configured.get("alma")
alma_users = configured.get("alma_users")  # patronload_now (§13): the same key

# Steps run in their own processes (staff_zip and student_zip side by side), forked from a server
# that has imported this code location once: a step starts in milliseconds, not the two seconds
# an import of dagster, dagster-aws and this package takes.
executor = dg.multiprocess_executor.configured({"start_method": {"forkserver": {}}})

defs = dg.Definitions(
    assets=[*dg.load_assets_from_modules([assets]), *([alma_sis_job] if alma else [])],
    executor=executor,
    jobs=[
        patronload_job,
        patronload_preview,
        warehouse_connection_test,
        *([alma_connection_test] if alma else []),
        *([patronload_now_job] if alma_users else []),
    ],
    schedules=[daily_patronload],
    sensors=[
        success_report,
        failure_report,
        overdue_report,
        *([alma_job_sensor(alma.poll_minutes)] if alma else []),
    ],
    resources=configured,
)
