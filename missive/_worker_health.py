"""Health across ``missive run --workers N``: each worker writes its state to a file, the
supervisor reads them all.

The supervisor makes a directory and names it to its workers in ``MISSIVE_HEALTH_DIR``.
Each worker's :class:`StatusWriter` replaces ``worker-N.json`` there once a second
with its pid and its :class:`~missive.health.Health` answers. The supervisor's
:class:`WorkersHealth` is live when every worker is (a file not rewritten for
:data:`STALE_AFTER` seconds is a frozen worker), and ready when every worker is: a
readiness probe gates rollouts, and a pod with a worker still connecting, or stuck
reconnecting, is not the capacity it claims.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from missive.health import Health

__all__ = ["HEALTH_DIR_VARIABLE", "STALE_AFTER", "StatusWriter", "WorkersHealth", "status_path"]

#: The environment variable naming the directory of the workers' status files.
HEALTH_DIR_VARIABLE = "MISSIVE_HEALTH_DIR"
#: Seconds after which a status file not rewritten says its worker is frozen (it is
#: rewritten every second by a thread of its own, which a busy handler does not stop).
STALE_AFTER = 15.0
_EVERY = 1.0

#: ``(number, pid or None while it is restarted, seconds since it started)`` of each
#: worker still meant to run.
WorkerList = Callable[[], list[tuple[int, int | None, float]]]


def status_path(directory: Path, number: int) -> Path:
    """Where worker ``number`` writes its status."""
    return directory / f"worker-{number}.json"


class StatusWriter:
    """Writes ``health``'s answers to ``path`` once a second, on a daemon thread."""

    def __init__(self, health: Health, path: Path) -> None:
        self.health = health
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="missive-health", daemon=True)

    def start(self) -> None:
        """Write now, then once a second until :meth:`close`."""
        self.write()
        self._thread.start()

    def close(self) -> None:
        """Stop writing (the file stays for the supervisor, which removes it)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def write(self) -> None:
        """Replace the file with the current answers, atomically."""
        live, live_reason = self.health.live()
        ready, ready_reason = self.health.ready()
        document = {
            "pid": os.getpid(),
            "live": live,
            "live_reason": live_reason,
            "ready": ready,
            "ready_reason": ready_reason,
        }
        draft = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        draft.write_text(json.dumps(document), encoding="utf-8")
        os.replace(draft, self.path)

    def _run(self) -> None:
        while not self._stop.wait(_EVERY):
            with contextlib.suppress(OSError):  # the supervisor removed the directory
                self.write()


class WorkersHealth:
    """The supervisor's answers: every worker live, every worker ready.

    :param directory: where the workers write their status.
    :param workers: the workers meant to be running (see :data:`WorkerList`).
    :param stopping: whether the supervisor is stopping them all.
    """

    def __init__(self, directory: Path, workers: WorkerList, stopping: Callable[[], bool]) -> None:
        self.directory = directory
        self._workers = workers
        self._stopping = stopping

    def live(self) -> tuple[bool, str]:
        """Live unless a worker says it is not, or has stopped saying anything."""
        workers = self._workers()
        for number, pid, age in workers:
            if pid is None:
                continue  # the supervisor restarts it
            status, silent = self._status(number, pid)
            name = f"worker {number} (pid {pid})"
            if status is None:
                if age > STALE_AFTER:
                    return False, f"{name} has not reported its health for {age:.0f} s"
            elif silent > STALE_AFTER:
                return False, f"{name} last reported its health {silent:.0f} s ago"
            elif not status["live"]:
                return False, f"{name}: {status['live_reason']}"
        return True, f"{len(workers)} workers live"

    def ready(self) -> tuple[bool, str]:
        """Ready when every worker is consuming, and the supervisor is not stopping."""
        if self._stopping():
            return False, "stopping: the workers finish the messages in hand"
        workers = self._workers()
        for number, pid, _ in workers:
            if pid is None:
                return False, f"worker {number} is being restarted"
            status, silent = self._status(number, pid)
            name = f"worker {number} (pid {pid})"
            if status is None:
                return False, f"{name} is starting"
            if silent > STALE_AFTER:
                return False, f"{name} last reported its health {silent:.0f} s ago"
            if not status["ready"]:
                return False, f"{name}: {status['ready_reason']}"
        return True, f"{len(workers)} workers consuming"

    def _status(self, number: int, pid: int) -> tuple[dict[str, object] | None, float]:
        """Worker ``number``'s status and its age in seconds; ``None`` if it wrote none yet."""
        path = status_path(self.directory, number)
        try:
            written = path.stat().st_mtime
            status = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None, 0.0
        if not isinstance(status, dict) or status.get("pid") != pid:
            return None, 0.0  # its previous life's
        return status, max(0.0, time.time() - written)
