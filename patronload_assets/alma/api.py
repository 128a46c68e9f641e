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
from lxml import etree
from pydantic import Field, PrivateAttr

from ..domain import alma_jobs

API_PATH = "/almaws/v1"
PAGE = 100  # Alma's largest page of job instances and events
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_BASE_URL = "https://api-na.hosted.exlibrisgroup.com"
USER_NOT_FOUND = "401861"  # GET /users/{id} of a user Alma does not have: HTTP 400 with this code


class AlmaApiError(RuntimeError):
    """A call to Alma's API that failed: which call, which status, Alma's error code."""

    def __init__(self, message: str, status: int | None = None, codes: tuple[str, ...] = ()):
        super().__init__(message)
        self.status, self.codes = status, codes


def alma_errors(body: bytes) -> list[tuple[str, str]]:
    """Alma's own word on a failed call: ``(errorCode, errorMessage)`` of its ``errorList``, in JSON
    or, should the gateway answer in XML (``web_service_result``), in XML."""
    try:
        answer = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        try:
            document = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
        except etree.XMLSyntaxError:
            return []
        return [
            (
                error.findtext("{*}errorCode") or "",
                alma_jobs.one_line(error.findtext("{*}errorMessage"))[:200],
            )
            for error in document.iterfind(".//{*}errorList/{*}error")
        ]
    errors = (
        alma_jobs.as_list((answer.get("errorList") or {}).get("error")) if isinstance(answer, dict) else []
    )
    return [
        (str(error.get("errorCode") or ""), alma_jobs.one_line(error.get("errorMessage"))[:200])
        for error in errors
        if isinstance(error, dict)
    ]


def describe_errors(errors: list[tuple[str, str]]) -> str:
    return "; ".join(f"error {code}: {message}" if message else f"error {code}" for code, message in errors)


class AlmaApi(dg.ConfigurableResource):
    """Alma's REST API: the key, the region's gateway, and calls that retry what may pass later."""

    api_key: str = Field(description="Alma API key (ALMA_API_KEY)")
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="The API gateway of the institution's region (ALMA_API_BASE_URL)",
    )
    timeout_seconds: float = 30
    attempts: int = 5
    backoff_seconds: float = 2.0

    def _get(self, path: str, query: dict | None = None, call: str | None = None) -> dict:
        return self._call("GET", path, query, call=call)

    def _call(
        self,
        method: str,
        path: str,
        query: dict | None = None,
        body: bytes | None = None,
        call: str | None = None,
        retried: frozenset[int] = RETRIED_STATUSES,
        answer_needed: bool = True,
        retry_lost_answers: bool = True,
    ) -> dict:
        """One call, JSON back; ``call`` names it in errors (a path template where the path holds a
        person's id: errors go to logs). Without ``answer_needed``, a success whose body is not JSON
        is a success all the same (``{}``). Without ``retry_lost_answers``, a call whose answer was lost
        (a timeout, a dropped connection: Alma may have carried it out) is not repeated here."""
        url = f"{self.base_url.rstrip('/')}{API_PATH}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Authorization": f"apikey {self.api_key}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/xml"
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        call = f"{method} {call or path}"
        for attempt in range(1, self.attempts + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                    data = response.read()
                try:
                    return json.loads(data.decode("utf-8") or "{}")
                except (UnicodeDecodeError, json.JSONDecodeError):
                    if answer_needed:
                        raise AlmaApiError(f"{call}: the answer is not JSON") from None
                    return {}
            except urllib.error.HTTPError as error:
                status, retry_after = error.code, error.headers.get("Retry-After")
                errors = alma_errors(error.read())
                error.close()
                if status not in retried or attempt == self.attempts:
                    said = describe_errors(errors)
                    raise AlmaApiError(
                        f"{call}: HTTP {status}{f' ({said})' if said else ''}",
                        status,
                        tuple(code for code, _ in errors),
                    ) from None
            except (urllib.error.URLError, TimeoutError, OSError) as error:
                reason = getattr(error, "reason", error)
                if attempt == self.attempts or not retry_lost_answers:
                    raise AlmaApiError(f"{call}: {type(error).__name__}: {reason}") from None
                retry_after = None
            delay = self.backoff_seconds * 2 ** (attempt - 1)
            if retry_after and retry_after.isdigit():
                delay = max(delay, min(float(retry_after), 300))
            time.sleep(delay)
        raise AssertionError("unreachable")


class AlmaJobs(AlmaApi):
    """The SIS synchronize job of the integration profile that picks up the zips (the key needs
    read access to configuration)."""

    job_id: str | None = Field(default=None, description="The SIS job's id (ALMA_SIS_JOB_ID)")
    profile_id: str | None = Field(
        default=None, description="The integration profile's id, to look the job up (ALMA_SIS_PROFILE_ID)"
    )
    poll_minutes: float = Field(
        default=10, gt=0, description="How often to look at the job (ALMA_POLL_MINUTES; 0.25 is 15 seconds)"
    )
    wait_hours: float = Field(
        default=26, gt=0, description="How long after an upload a job run may take to appear and end"
    )
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


class AlmaUsers(AlmaApi):
    """Alma's Users API, to create the few accounts that cannot wait for tomorrow's load (the key
    needs Users read/write). ``may_send`` is false in dev without an explicit base URL."""

    may_send: bool = Field(default=True, description="Whether users may be created (POST) at base_url")

    def has_user(self, primary_id: str) -> bool:
        """Whether Alma has a user of this id (any unique identifier counts)."""
        try:
            path = f"/users/{urllib.parse.quote(primary_id, safe='')}"
            self._call(
                "GET", path, {"user_id_type": "all_unique"}, call="/users/{user_id}", answer_needed=False
            )
        except AlmaApiError as error:
            if error.status == 400 and USER_NOT_FOUND in error.codes:
                return False
            raise
        return True

    def create_user(self, user_xml: bytes, primary_id: str) -> dict:
        """Create the user (``POST /users``, the ``<user>`` document the load writes). A call Alma
        may have carried out before failing (a 5xx, a timeout) is not repeated blindly: the user is
        looked up."""
        query = {"social_authentication": "false", "send_pin_number_letter": "false"}
        for attempt in range(1, self.attempts + 1):
            try:
                return self._call(
                    "POST", "/users", query, body=user_xml, retried=frozenset({429}), answer_needed=False,
                    retry_lost_answers=False,
                )  # fmt: skip
            except AlmaApiError as error:
                lost = (
                    error.status is None
                )  # a timeout or a dropped connection: as a 5xx, Alma may have done it
                if not (lost or error.status >= 500) or attempt == self.attempts:
                    raise
                if self.has_user(primary_id):
                    return {}
            time.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        raise AssertionError("unreachable")
