"""A LAVA server's REST API v0.2 (what KernelCI's LAVA runtime uses): submit
a job, wait for it with a deadline, fetch its log, cancel it.

The token is sent as `Authorization: Token ...`; it comes from the
environment (the target file names the variable) and is never written
anywhere: errors name the URL, never the headers.  A server that does not
answer is LabUnreachable after a few tries, so a cell waits for a dead lab
no longer than its deadline and a little more.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

FINISHED = "Finished"
SUBMITTED = "Submitted"  # waiting for a device
POLL_S = 2.0
HTTP_TIMEOUT_S = 20.0
UNREACHABLE_AFTER_S = 30.0  # no answer for this long while waiting: the lab is unreachable


class LabUnreachable(Exception):
    """The server did not answer (connection refused, reset, timed out, 5xx)."""


class LabRejected(Exception):
    """The server answered no (4xx): a bad job definition, a bad token, an unknown job."""

    def __init__(self, message: str, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True)
class JobState:
    id: int
    state: str  # Submitted | Scheduling | Scheduled | Running | Canceling | Finished
    health: str  # Unknown | Complete | Incomplete | Canceled
    failure_comment: str
    device: str

    @property
    def finished(self) -> bool:
        return self.state == FINISHED


class LavaServer:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._token = token

    def __repr__(self) -> str:  # never the token
        return f"LavaServer({self.url!r})"

    def job_url(self, job_id: int) -> str:
        return f"{self.url}/scheduler/job/{job_id}"

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        url = f"{self.url}/api/v0.2/{path}"
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Token {self._token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as r:
                return r.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")[:2000]
            if exc.code >= 500:
                raise LabUnreachable(f"{method} {url}: HTTP {exc.code}") from None
            raise LabRejected(f"{method} {url}: HTTP {exc.code}: {text}", exc.code, text) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise LabUnreachable(f"{method} {url}: {reason}") from None

    def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return json.loads(self._request(method, path, body) or b"null")

    # -- the calls ------------------------------------------------------------------------

    def version(self) -> str:
        return str(self._json("GET", "system/version/").get("version", ""))

    def whoami(self) -> str:
        return str(self._json("GET", "system/whoami/").get("user", ""))

    def submit(self, definition: str) -> int:
        data = self._json("POST", "jobs/", {"definition": definition})
        ids = data.get("job_ids") or []
        if not ids:
            raise LabRejected(f"POST {self.url}/api/v0.2/jobs/: no job id in the answer: {data}", 0, str(data))
        return int(ids[0])

    def state(self, job_id: int) -> JobState:
        d = self._json("GET", f"jobs/{job_id}/")
        return JobState(int(d["id"]), str(d.get("state", "")), str(d.get("health", "")),
                        str(d.get("failure_comment") or ""), str(d.get("actual_device") or ""))

    def cancel(self, job_id: int) -> None:
        self._request("GET", f"jobs/{job_id}/cancel/")

    def logs(self, job_id: int) -> str:
        try:
            return self._request("GET", f"jobs/{job_id}/logs/").decode(errors="replace")
        except LabRejected as exc:
            if exc.status == 404:  # no log (yet): a job cancelled before it started
                return ""
            raise

    def wait(self, job_id: int, deadline: float, *, poll_s: float = POLL_S,
             on_state=None, queue_deadline: float | None = None) -> JobState | None:
        """Poll until the job is Finished (its state) or the monotonic deadline
        passes (None); also None at queue_deadline if the job is still
        Submitted then (no device took it: offline, retired, busy).  Short
        outages are ridden out; an outage longer than UNREACHABLE_AFTER_S
        raises LabUnreachable."""
        down_since: float | None = None
        last: JobState | None = None
        while True:
            try:
                st = self.state(job_id)
                down_since = None
                if on_state is not None and (last is None or (st.state, st.health) != (last.state, last.health)):
                    on_state(st)
                last = st
                if st.finished:
                    return st
                if queue_deadline is not None and st.state == SUBMITTED and time.monotonic() >= queue_deadline:
                    return None
            except LabUnreachable:
                now = time.monotonic()
                down_since = down_since or now
                if now - down_since >= UNREACHABLE_AFTER_S or now >= deadline:
                    raise
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
