"""A run launcher for tests in the production shape: every run in a process of its own that cannot
see the host's instance storage folder or temp folder, as an ECS task (EcsRunLauncher) has a disk
of its own. Each run starts as the ECS launcher starts it (``dagster api execute_run`` with the
run's origin and the instance's ref), inside a private mount namespace (``unshare --mount``, as
root) whose ``hidden`` folders are covered by empty tmpfs mounts. A file the host leaves in a
hidden folder makes the run refuse to start if it can still see it: the isolation is checked,
not assumed.

Instance configuration (``dagster.yaml``)::

    run_launcher:
      module: patronload_assets_tests.isolated_runs
      class: IsolatedRunLauncher
      config:
        hidden: [/path/to/dagster_home/storage, /path/to/host/tmp]
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import Array, Field
from dagster._core.launcher import LaunchRunContext, RunLauncher
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData

SENTINEL = ".visible-to-the-host-only"


def isolated_command(hidden: Sequence[str], command: Sequence[str]) -> list[str]:
    """``command`` in a new mount namespace with an empty tmpfs over each hidden folder; it does
    not start when a hidden folder still shows the host's sentinel file."""
    steps = []
    for folder in hidden:
        quoted = shlex.quote(folder)
        steps += [
            f"mount -t tmpfs -o mode=0700,size=2g patronload-task-disk {quoted}",
            f"if [ -e {shlex.quote(os.path.join(folder, SENTINEL))} ]; then "
            f"echo 'the host folder {folder} is visible' >&2; exit 97; fi",
        ]
    script = " && ".join([*steps, 'exec "$@"'])
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "isolated-run", *command]


def leave_sentinels(hidden: Sequence[str]) -> None:
    """A file in each hidden folder that an isolated run must not see."""
    for folder in hidden:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, SENTINEL), "w") as file:
            file.write("the host's\n")


def run_environment(run) -> dict[str, str]:
    """The launcher's environment and the run's code location's ``ecs.env_vars``."""
    environment = dict(os.environ)
    context = run.job_code_origin.repository_origin.container_context or {}
    for item in context.get("ecs", {}).get("env_vars", []):
        name, given, value = item.partition("=")
        environment[name] = value if given else os.environ.get(name, "")
    return environment


class IsolatedRunLauncher(RunLauncher, ConfigurableClass):
    def __init__(self, hidden: Sequence[str], inst_data: ConfigurableClassData | None = None):
        self._inst_data = inst_data
        self.hidden = list(hidden)
        self._processes: dict[str, subprocess.Popen] = {}
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict:
        return {"hidden": Field(Array(str), description="Folders an isolated run must not see.")}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, **config_value)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        arguments = ExecuteRunArgs(
            job_origin=run.job_code_origin,
            run_id=run.run_id,
            instance_ref=self._instance.get_ref(),
            set_exit_code_on_failure=True,
        ).get_command_args()
        # The entry point is this interpreter's dagster: everything after it is the ECS task's command.
        command = [sys.executable, "-m", "dagster", *arguments[arguments.index("api") :]]
        leave_sentinels(self.hidden)
        self._processes[run.run_id] = subprocess.Popen(
            isolated_command(self.hidden, command), start_new_session=True, env=run_environment(run)
        )
        self._instance.report_engine_event(
            f"Started in its own mount namespace (pid {self._processes[run.run_id].pid}); hidden: "
            + ", ".join(self.hidden),
            run,
            cls=self.__class__,
        )

    def terminate(self, run_id: str) -> bool:
        process = self._processes.get(run_id)
        if process is None or process.poll() is not None:
            return False
        self._instance.report_run_canceling(self._instance.get_run_by_id(run_id))
        os.killpg(process.pid, signal.SIGTERM)
        return True
