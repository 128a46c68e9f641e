"""A stand-in for Alma's Jobs API, served over real HTTP on localhost: the documented paths and
shapes (docs/patron-rules.md §12), scripted by each test."""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = "l8xx-test-key-not-a-secret"
JOB_ID, PROFILE_ID = "S1234", "P5678"


def alma_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def counters(created=0, updated=0, unchanged=0, rejected=0, **others) -> list[dict]:
    """A job report's counters, named by their description as Alma does."""
    named = {"Users created": created, "Users updated": updated, "Users unchanged": unchanged,
             "Users rejected": rejected, **others}  # fmt: skip
    return [
        {"type": {"value": f"C{index}", "desc": desc}, "value": str(value)}
        for index, (desc, value) in enumerate(named.items())
    ]


def rejection(primary_id: str, reason: str) -> dict:
    return {
        "type": {"value": "USER_REJECTED", "desc": "User rejected"},
        "description": reason,
        "entity": {"value": primary_id, "desc": "User"},
    }


class StandInAlma:
    def __init__(self):
        self.runs: dict[str, dict] = {}  # instance id -> the instance's JSON
        self.events: dict[str, list[dict]] = {}
        self.fail_next: list[int] = []  # HTTP statuses to answer the next calls with
        self.requests: list[str] = []
        self.rejected: list[str] = []  # what a scripted run rejected, for the test to compare
        self.on_list: Callable[[StandInAlma], None] | None = None  # called before listing runs
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_run(self, instance_id: str, submitted: dt.datetime, status: str, **fields) -> dict:
        run = {
            "id": instance_id,
            "submit_time": alma_time(submitted),
            "status": {"value": status, "desc": status.replace("_", " ").title()},
            "progress": 100 if not status.startswith(("QUEUED", "RUNNING", "PENDING")) else 40,
            "counter": [],
            **fields,
        }
        with self._lock:
            self.runs[instance_id] = run
        return run

    def __enter__(self) -> StandInAlma:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, path: str, query: dict) -> tuple[int, dict]:
        parts = path.removeprefix("/almaws/v1").strip("/").split("/")
        limit, offset = int(query.get("limit", 10)), int(query.get("offset", 0))
        if parts == ["conf", "jobs"]:
            jobs = (
                [{"id": JOB_ID, "name": "SIS synchronize"}] if query.get("profile_id") == PROFILE_ID else []
            )
            return 200, {"job": jobs, "total_record_count": len(jobs)}
        if len(parts) < 4 or parts[:2] != ["conf", "jobs"] or parts[2] != JOB_ID or parts[3] != "instances":
            return 404, {"errorsExist": True, "errorList": {"error": [{"errorMessage": "not found"}]}}
        if len(parts) == 4:
            if self.on_list:
                self.on_list(self)
            since = query.get("submit_date_from", "0000")
            listed = [
                {key: run[key] for key in ("id", "submit_time", "status")}  # a list entry: no counters
                for run in sorted(self.runs.values(), key=lambda run: run["submit_time"])
                if run["submit_time"][:10] >= since
            ]
            return 200, {"job_instance": listed[offset : offset + limit], "total_record_count": len(listed)}
        run = self.runs.get(parts[4])
        if run is None:
            return 404, {"errorsExist": True}
        if len(parts) == 5:
            return 200, run
        if parts[5:] == ["events"]:
            events = self.events.get(parts[4], [])
            return 200, {"event": events[offset : offset + limit], "total_record_count": len(events)}
        return 404, {"errorsExist": True}

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                with standin._lock:
                    standin.requests.append(self.path)
                    failure = standin.fail_next.pop(0) if standin.fail_next else None
                if self.headers.get("Authorization") != f"apikey {KEY}":
                    status, body = (
                        401,
                        {"errorsExist": True, "errorList": {"error": [{"errorCode": "UNAUTHORIZED"}]}},
                    )
                elif failure:
                    status, body = failure, {"errorsExist": True}
                else:
                    status, body = standin._answer(url.path, query)
                data = json.dumps(body).encode()
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
