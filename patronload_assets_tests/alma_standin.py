"""A stand-in for Alma's Jobs API, served over real HTTP on localhost, answering only in the shapes
Ex Libris publishes (docs/patron-rules.md §12): ``{total_record_count, job_instance}`` for a job's
runs, ``rest_job_instance`` for one run (``counter`` values are strings, ``alert`` a list),
``rest_events`` for its events (``event_id`` and ``event_key`` pairs with opaque numeric codes), and
``errorList`` errors with Alma's codes (402217 a bad date, 40166410 a bad status, 60332 events of a
job that is not USERS/SIS); and the Users API's ``GET /users/{user_id}`` (HTTP 400 with 401861 for a
user it does not have) and ``POST /users`` (an ``errorList`` for an identifier another user holds).
Scripted by each test."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lxml import etree

KEY = "l8xx-test-key-not-a-secret"
JOB_ID, PROFILE_ID = "S1234", "P5678"
OTHER_JOB_ID = "M4321"  # a job of another category: its events are refused (60332)
# Opaque, as Alma's are: the codes of an event's values are not published.
USER_CODE, REASON_CODE = "99122741130001021", "99122741130002021"
RUN_STATUSES = (
    "QUEUED", "PENDING", "INITIALIZING", "RUNNING", "FINALIZING", "COMPLETED_SUCCESS", "COMPLETED_WARNING",
    "COMPLETED_FAILED", "COMPLETED_NO_BULKS", "FAILED", "MANUAL_HANDLING_REQUIRED", "SKIPPED",
    "SYSTEM_ABORTED", "USER_ABORTED",
)  # fmt: skip


def alma_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def counters(created=0, updated=0, unchanged=0, rejected=0, **others) -> list[dict]:
    """A SIS job report's counters as the UI labels them; codes opaque, values strings."""
    processed = created + updated + unchanged + rejected
    named = {
        "Total records processed": processed, "Total users processed": processed,
        "Total users created successfully": created, "Total users updated successfully": updated,
        "Total users unchanged": unchanged, "Total users rejected": rejected, **others,
    }  # fmt: skip
    return [
        {"type": {"value": f"9912274113000{index}021", "desc": desc}, "value": str(value)}
        for index, (desc, value) in enumerate(named.items())
    ]


_event_ids = iter(range(26714670000011, 26714679999999, 100))


def event(*values: str, codes: tuple[str, ...] = (USER_CODE, REASON_CODE)) -> dict:
    """One ``rest_events`` event: its id and ``event_key`` pairs."""
    return {
        "event_id": str(next(_event_ids)),
        "event_key": [{"code": code, "value": value} for code, value in zip(codes, values, strict=False)],
    }


def rejection(primary_id: str, reason: str) -> dict:
    """An event of a rejected user: the user and Alma's reason, under codes nobody has published."""
    return event(primary_id, reason)


class StandInAlma:
    def __init__(self):
        self.runs: dict[str, dict] = {}  # instance id -> the instance's JSON
        self.events: dict[str, list[dict]] = {}
        self.fail_next: list[int] = []  # HTTP statuses to answer the next calls with
        self.stall_next: list[float] = []  # seconds to hold the next calls' answers (carried out first)
        self.requests: list[str] = []
        self.rejected: list[str] = []  # what a scripted run rejected, for the test to compare
        self.on_list: Callable[[StandInAlma], None] | None = None  # called before listing runs
        # The Users API: users by primary id in upper case -> their identifiers; what was created.
        self.users: dict[str, set[str]] = {}
        self.created: list[bytes] = []
        self.job_record = True  # GET /conf/jobs/{id}: not among the documented job calls; may be refused
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_run(self, instance_id: str, submitted: dt.datetime, status: str, **fields) -> dict:
        running = status in RUN_STATUSES[:5]
        run = {
            "id": instance_id,
            "external_id": "",
            "name": "SIS synchronize - Patrons",
            "submitted_by": {"value": "System", "desc": "System"},
            "submit_time": alma_time(submitted),
            "start_time": alma_time(submitted + dt.timedelta(seconds=3)),
            "progress": 40 if running else 100,
            "status": {"value": status, "desc": status.replace("_", " ").title()},
            "status_date": alma_time(submitted)[:10] + "Z",
            "alert": [],
            "counter": [],
            "action": [],
            "job_info": {"id": JOB_ID, "name": "SIS synchronize", "type": {"value": "SIS"},
                         "category": {"value": "USERS"}},
            **fields,
        }  # fmt: skip
        with self._lock:
            self.runs[instance_id] = run
        return run

    def __enter__(self) -> StandInAlma:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_user(self, primary_id: str, *identifiers: str) -> None:
        self.users[primary_id.upper()] = {value.upper() for value in identifiers}

    def _user_answer(self, method: str, parts: list[str], query: dict, body: bytes, content_type: str):
        """``GET /users/{user_id}`` (HTTP 400, 401861 for a user Alma lacks) and ``POST /users``."""
        if method == "GET" and len(parts) == 2:
            wanted = urllib.parse.unquote(parts[1]).upper()
            if wanted in self.users or any(wanted in held for held in self.users.values()):
                return 200, {"primary_id": wanted, "account_type": {"value": "EXTERNAL"}}
            return error(
                400, "401861", f"User with identifier {urllib.parse.unquote(parts[1])} was not found."
            )
        if method == "POST" and len(parts) == 1:
            if query != {"social_authentication": "false", "send_pin_number_letter": "false"}:
                return error(400, "401652", f"Unexpected query {sorted(query)}")
            if content_type != "application/xml":
                return error(400, "401653", "Body must be application/xml")
            user = etree.fromstring(body)
            primary_id = (user.findtext("primary_id") or "").upper()
            identifiers = {(value.text or "").upper() for value in user.iterfind("user_identifiers/*/value")}
            if primary_id in self.users or any(identifiers & held for held in self.users.values()):
                return error(400, "401858", "An identifier of this user is already held by another user")
            self.users[primary_id] = identifiers
            self.created.append(body)
            return 200, {"primary_id": primary_id}
        return error(400, "402213", "Not found")

    def _answer(self, path: str, query: dict) -> tuple[int, dict]:
        parts = path.removeprefix("/almaws/v1").strip("/").split("/")
        limit, offset = int(query.get("limit", 10)), int(query.get("offset", 0))
        if parts == ["conf", "jobs"]:
            jobs = (
                [{"id": JOB_ID, "name": "SIS synchronize", "related_profile": {"value": PROFILE_ID}}]
                if query.get("profile_id") == PROFILE_ID
                else []
            )
            return 200, {"job": jobs, "total_record_count": len(jobs)}
        if len(parts) < 3 or parts[:2] != ["conf", "jobs"] or parts[2] not in (JOB_ID, OTHER_JOB_ID):
            return error(400, "402213", "Job not found")
        if len(parts) == 3:
            if not self.job_record:
                return error(400, "402213", "Not supported")
            category, kind = ("USERS", "SIS") if parts[2] == JOB_ID else ("ACQUISITIONS", "OTHER")
            return 200, {"id": parts[2], "name": "SIS synchronize" if kind == "SIS" else "Export",
                         "category": {"value": category}, "type": {"value": kind}}  # fmt: skip
        if parts[3] != "instances":
            return error(400, "402213", "Job not found")
        if len(parts) == 4:
            if self.on_list:
                self.on_list(self)
            since = query.get("submit_date_from", "0000-00-00")
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", since):
                return error(400, "402217", "Invalid date format")
            if query.get("status") and query["status"] not in RUN_STATUSES:
                return error(400, "40166410", "Invalid status")
            listed = [
                {key: run[key] for key in ("id", "submit_time", "status", "progress")}  # no counters
                for run in sorted(self.runs.values(), key=lambda run: run["submit_time"])
                if run["submit_time"][:10] >= since and parts[2] == JOB_ID
            ]
            return 200, {"total_record_count": len(listed), "job_instance": listed[offset : offset + limit]}
        if parts[2] != JOB_ID and parts[5:] == ["events"]:
            return error(400, "60332", "Only jobs of category and type USERS/SIS are supported")
        run = self.runs.get(parts[4]) if parts[2] == JOB_ID else None
        if run is None:
            return error(400, "402219", "Job instance not found")
        if len(parts) == 5:
            return 200, run
        if parts[5:] == ["events"]:
            events = self.events.get(parts[4], [])
            return 200, {"total_record_count": len(events), "event": events[offset : offset + limit]}
        return error(400, "402213", "Not found")

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                self.do_GET()

            def do_GET(self):  # noqa: N802 (http.server's name)
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with standin._lock:
                    standin.requests.append(f"{self.command} {self.path}")
                    failure = standin.fail_next.pop(0) if standin.fail_next else None
                    stall = standin.stall_next.pop(0) if standin.stall_next else 0
                if self.headers.get("Authorization") != f"apikey {KEY}":
                    status, body = error(
                        401, "UNAUTHORIZED", "API-key not defined or not configured to allow this API."
                    )
                elif failure:
                    status, body = error(
                        failure, "PER_SECOND_THRESHOLD" if failure == 429 else "UNKNOWN", "Try again"
                    )
                elif url.path.removeprefix("/almaws/v1").startswith("/users"):
                    with standin._lock:
                        parts = url.path.removeprefix("/almaws/v1").strip("/").split("/")
                        status, body = standin._user_answer(
                            self.command, parts, query, body, self.headers.get("Content-Type", "")
                        )
                else:
                    status, body = standin._answer(url.path, query)
                data = json.dumps(body).encode()
                time.sleep(stall)  # carried out, the answer held past the client's wait: it times out
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet
                pass

        return Handler


def error(status: int, code: str, message: str) -> tuple[int, dict]:
    """Alma's error answer: ``errorsExist`` and an ``errorList``."""
    return status, {
        "errorsExist": True,
        "errorList": {"error": [{"errorCode": code, "errorMessage": message, "trackingId": "E01-0112"}]},
        "result": None,
    }
