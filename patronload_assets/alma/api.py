"""Alma's Jobs API, the calls the report of Alma's verdict and the first-day check need
(docs/patron-rules.md §12), as Ex Libris publishes them: ``GET /conf/jobs`` (by integration profile),
``/conf/jobs/{id}``, ``/conf/jobs/{id}/instances`` (``{total_record_count, job_instance}``),
``/conf/jobs/{id}/instances/{instance}`` (``rest_job_instance``) and its ``/events``
(``rest_events``: ``{total_record_count, event: [{event_id, event_key: [{code, value}]}]}``).

JSON over HTTPS with the key in the ``Authorization`` header; timeouts; a 429 (the institution's
daily threshold, or too many calls a second) or a 5xx is retried with exponential backoff. An error
names the call, its HTTP status and Alma's error code (``errorList.error[].errorCode``: 402217 a bad
date, 40166410 a bad status, 60332 events of a job that is not USERS/SIS), never the key.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import dagster as dg
from pydantic import Field, PrivateAttr

from ..domain import alma_jobs

API_PATH = "/almaws/v1"
PAGE = 100  # Alma's largest page of job instances and events
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


class AlmaApiError(RuntimeError):
    """A call to Alma's API that failed: which call, which status, Alma's error code."""


def alma_error(body: bytes) -> str:
    """Alma's own word on a failed call: ``error 60332: message`` from its ``errorList``, or ""."""
    try:
        answer = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return ""
    errors = (
        alma_jobs.as_list((answer.get("errorList") or {}).get("error")) if isinstance(answer, dict) else []
    )
    said = []
    for error in errors:
        if isinstance(error, dict):
            code, message = (
                str(error.get("errorCode") or ""),
                " ".join(str(error.get("errorMessage") or "").split()),
            )
            said.append(f"error {code}: {message[:200]}" if message else f"error {code}")
    return "; ".join(said)


class AlmaJobs(dg.ConfigurableResource):
    """The SIS synchronize job of the integration profile that picks up the zips."""

    api_key: str = Field(description="Alma API key with read access to configuration (ALMA_API_KEY)")
    base_url: str = Field(
        default="https://api-na.hosted.exlibrisgroup.com",
        description="The API gateway of the institution's region (ALMA_API_BASE_URL)",
    )
    job_id: str | None = Field(default=None, description="The SIS job's id (ALMA_SIS_JOB_ID)")
    profile_id: str | None = Field(
        default=None, description="The integration profile's id, to look the job up (ALMA_SIS_PROFILE_ID)"
    )
    poll_minutes: int = Field(
        default=10, ge=1, description="How often to look at the job (ALMA_POLL_MINUTES)"
    )
    wait_hours: float = Field(
        default=26, gt=0, description="How long after an upload a job run may take to appear and end"
    )
    timeout_seconds: float = 30
    attempts: int = 5
    backoff_seconds: float = 2.0
    _job_id: str | None = PrivateAttr(default=None)

    # -- the calls --------------------------------------------------------------------------------

    def sis_job_id(self) -> str:
        """The configured job, or the scheduled job of the configured integration profile."""
        if self.job_id:
            return self.job_id
        if self._job_id is None:
            if not self.profile_id:
                raise AlmaApiError("neither ALMA_SIS_JOB_ID nor ALMA_SIS_PROFILE_ID is set")
            found = self._get("/conf/jobs", {"type": "SCHEDULED", "profile_id": self.profile_id, "limit": 10})
            jobs = found.get("job") or []
            if not jobs:
                raise AlmaApiError(
                    f"GET /conf/jobs: no scheduled job for integration profile {self.profile_id}"
                )
            self._job_id = str(jobs[0].get("id"))
        return self._job_id

    def job_instances(self, job_id: str, submitted_from: dt.date) -> list[dict]:
        """The job's runs submitted on or after ``submitted_from``, every page."""
        return list(
            self._pages(
                f"/conf/jobs/{job_id}/instances",
                "job_instance",
                {"submit_date_from": submitted_from.isoformat()},
            )
        )

    def job(self, job_id: str) -> dict:
        return self._get(f"/conf/jobs/{job_id}")

    def job_instance(self, job_id: str, instance_id: str) -> dict:
        return self._get(f"/conf/jobs/{job_id}/instances/{instance_id}")

    def job_event_count(self, job_id: str, instance_id: str) -> int:
        """How many events (rejected users) a run has, from one small page."""
        page = self._get(f"/conf/jobs/{job_id}/instances/{instance_id}/events", {"limit": 1, "offset": 0})
        return int(page.get("total_record_count") or 0)

    def job_events(self, job_id: str, instance_id: str) -> Iterator[dict]:
        """The run's per-user events (a SIS job's rejected users), every page."""
        return self._pages(f"/conf/jobs/{job_id}/instances/{instance_id}/events", "event", {})

    # -- HTTP ---------------------------------------------------------------------------------------

    def _pages(self, path: str, item: str, query: dict) -> Iterator[dict]:
        offset = 0
        while True:
            page = self._get(path, {**query, "limit": PAGE, "offset": offset})
            items = alma_jobs.as_list(page.get(item))  # one object where a list is expected: a list of one
            yield from items
            offset += len(items)
            total = int(page.get("total_record_count") or 0)
            if not items or offset >= total:
                return

    def _get(self, path: str, query: dict | None = None) -> dict:
        url = f"{self.base_url.rstrip('/')}{API_PATH}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(
            url, headers={"Authorization": f"apikey {self.api_key}", "Accept": "application/json"}
        )
        call = f"GET {path}"
        for attempt in range(1, self.attempts + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                    return json.loads(response.read().decode("utf-8") or "{}")
            except urllib.error.HTTPError as error:
                status, retry_after = error.code, error.headers.get("Retry-After")
                said = alma_error(error.read())
                error.close()
                if status not in RETRIED_STATUSES or attempt == self.attempts:
                    raise AlmaApiError(f"{call}: HTTP {status}{f' ({said})' if said else ''}") from None
            except (urllib.error.URLError, TimeoutError, OSError) as error:
                reason = getattr(error, "reason", error)
                if attempt == self.attempts:
                    raise AlmaApiError(f"{call}: {type(error).__name__}: {reason}") from None
                retry_after = None
            except json.JSONDecodeError:
                raise AlmaApiError(f"{call}: the answer is not JSON") from None
            delay = self.backoff_seconds * 2 ** (attempt - 1)
            if retry_after and retry_after.isdigit():
                delay = max(delay, min(float(retry_after), 300))
            time.sleep(delay)
        raise AssertionError("unreachable")
