"""The pods/log subresource as an API server serves it (kmock has none): text/plain, the container
chosen by `container`, `tailLines`, `sinceSeconds` and `timestamps` honoured, and the errors a
real server gives for a log that is not there (404: no such pod; 400: no such container, or one
still waiting to start). The tests play the kubelet: they write lines into a pod's log, or pump a
real process's output into it as it comes."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping
from typing import IO

import aiohttp.web


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message}
    return aiohttp.web.json_response({**body, "reason": reason, "code": code}, status=code)


class PodLogs:
    """Every pod's log, by (namespace, pod, container): lines with the time they were written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lines: dict[tuple[str, str, str], list[tuple[dt.datetime, str]]] = {}
        self.reads: list[tuple[str, str, str]] = []  # (namespace, pod, query) of each answered read

    def write(self, namespace: str, pod: str, text: str, container: str = "worker") -> None:
        now = dt.datetime.now(dt.timezone.utc)
        with self._lock:
            lines = self._lines.setdefault((namespace, pod, container), [])
            lines.extend((now, line) for line in text.splitlines())

    def pump(self, namespace: str, pod: str, stream: IO[str], container: str = "worker") -> threading.Thread:
        """A thread that copies `stream` (a process's stdout) line by line into the pod's log as the
        kubelet does, until it ends; the whole output stays in the thread's `output`."""
        collected: list[str] = []

        def run() -> None:
            for line in iter(stream.readline, ""):
                collected.append(line)
                self.write(namespace, pod, line.rstrip("\n"), container)

        thread = threading.Thread(target=run, daemon=True, name=f"log {pod}")
        thread.output = collected  # type: ignore[attr-defined]
        thread.start()
        return thread

    def text(self, namespace: str, pod: str, container: str = "worker") -> str:
        with self._lock:
            return "".join(line + "\n" for _, line in self._lines.get((namespace, pod, container), []))

    def answer(self, pod: Mapping | None, namespace: str, name: str, query: Mapping[str, str]) -> aiohttp.web.Response:
        """GET /api/v1/namespaces/NS/pods/NAME/log?QUERY for `pod` (None: there is none)."""
        if pod is None:
            return _status(404, "NotFound", f'pods "{name}" not found')
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        container = query.get("container") or ""
        if not container:
            if len(containers) != 1:
                choices = " ".join(str(c) for c in containers)
                return _status(
                    400, "BadRequest", f"a container name must be specified for pod {name}, choose one of: [{choices}]"
                )
            container = str(containers[0])
        if container not in containers:
            return _status(400, "BadRequest", f"container {container} is not valid for pod {name}")
        statuses = {cs.get("name"): cs for cs in (pod.get("status") or {}).get("containerStatuses") or []}
        state = (statuses.get(container) or {}).get("state") or {}
        if not state or "waiting" in state:
            why = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
            return _status(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: {why}')
        with self._lock:
            lines = list(self._lines.get((namespace, name, container), []))
            self.reads.append((namespace, name, "&".join(f"{k}={v}" for k, v in sorted(query.items()))))
        if query.get("sinceSeconds"):
            since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=int(query["sinceSeconds"]))
            lines = [(t, line) for t, line in lines if t >= since]
        if query.get("tailLines"):
            tail = int(query["tailLines"])
            lines = lines[len(lines) - tail :] if tail < len(lines) else lines
        stamp = query.get("timestamps") == "true"
        text = "".join(
            (f"{t.strftime('%Y-%m-%dT%H:%M:%S.%f')}000Z " if stamp else "") + f"{line}\n" for t, line in lines
        )
        return aiohttp.web.Response(text=text, content_type="text/plain")
