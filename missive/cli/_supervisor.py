"""The ``missive run --workers N`` supervisor: N worker processes, restarted when they
die, stopped together (see :mod:`missive.cli._run` for the rules it keeps).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

__all__ = [
    "BOOT_ERROR",
    "START_ERROR",
    "SUPERVISOR_VARIABLE",
    "WORKERS_VARIABLE",
    "WORKER_VARIABLE",
    "Supervisor",
    "describe_exit",
]

logger = logging.getLogger("missive.cli.run")

#: The exit status of a worker whose adapter could not be loaded: not restarted.
BOOT_ERROR = 3
#: The environment variable that gives a worker its number (1 to N).
WORKER_VARIABLE = "MISSIVE_WORKER"
# A worker that dies sooner than this after starting is restarted only after it.
_QUICK_DEATH = 1.0
#: The exit status of a worker whose adapter failed before it was ready (consuming).
START_ERROR = 4
# A worker that fails to start this many times in a row (a missing queue, a wrong
# password) will not start: restarting it again would not help.
_FAILED_STARTS = 3
#: How many workers the supervisor started, for a worker to check its adapter may be shared.
WORKERS_VARIABLE = "MISSIVE_WORKERS"
#: The supervisor's pid, for a worker to notice it died.
SUPERVISOR_VARIABLE = "MISSIVE_SUPERVISOR_PID"
_POLL = 0.05


def _ordinal(number: int) -> str:
    return {1: "st", 2: "nd", 3: "rd"}.get(number if number < 20 else number % 10, "th")


def describe_exit(status: int) -> str:
    """``exited with status 1`` or ``was killed by SIGKILL``, for a Popen returncode."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return f"exited with status {status}"


@dataclass
class _Worker:
    number: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float = 0.0
    failed_starts: int = 0  # START_ERROR exits in a row
    finished: bool = False  # exited 0 on its own: not restarted


class Supervisor:
    """Starts, watches, restarts and stops the workers of one ``missive run --workers N``."""

    def __init__(self, target: str, count: int, graceful_timeout: float, log_level: str) -> None:
        self.target = target
        self.workers = [_Worker(number) for number in range(1, count + 1)]
        self.graceful_timeout = graceful_timeout
        self.log_level = log_level
        #: ``--concurrency``, passed on to each worker.
        self.concurrency: int | None = None
        #: More options passed on to each worker (``--log-format json``).
        self.options: list[str] = []
        #: More environment variables for each worker.
        self.env: dict[str, str] = {}
        #: Called with a worker's number and pid once it exited.
        self.on_exit: Callable[[int, int], None] | None = None
        self.stop_signal: int | None = None

    def running(self) -> list[tuple[int, int | None, float]]:
        """``(number, pid or None while it waits for its restart, seconds since it
        started)`` of each worker that has not finished on its own. Thread-safe."""
        now = time.monotonic()
        found = []
        for worker in self.workers:
            process = worker.process
            if not worker.finished:
                pid = None if process is None else process.pid
                found.append((worker.number, pid, now - worker.started))
        return found

    def stopping(self) -> bool:
        """Whether a stop signal came: the workers are being stopped."""
        return self.stop_signal is not None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signal = signum

    def run(self) -> int:
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {s: signal.signal(s, self._on_signal) for s in signals}
        try:
            return self._supervise()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _start(self, worker: _Worker) -> None:
        command = [sys.executable, "-m", "missive", "run", self.target]
        command += ["--log-level", self.log_level]
        if self.concurrency is not None:
            command += ["--concurrency", str(self.concurrency)]
        command += self.options
        env = {
            **os.environ,
            **self.env,
            WORKER_VARIABLE: str(worker.number),
            WORKERS_VARIABLE: str(len(self.workers)),
            SUPERVISOR_VARIABLE: str(os.getpid()),
        }
        worker.process = subprocess.Popen(command, env=env)
        worker.started = time.monotonic()
        logger.info("worker %d started (pid %d)", worker.number, worker.process.pid)

    def _exited(self, worker: _Worker, pid: int) -> None:
        if self.on_exit is not None:
            try:
                self.on_exit(worker.number, pid)
            except Exception:
                logger.exception("forgetting worker %d (pid %d) failed", worker.number, pid)

    def _supervise(self) -> int:
        logger.info("supervising %d workers running %s", len(self.workers), self.target)
        for worker in self.workers:
            self._start(worker)
        while self.stop_signal is None:
            if all(worker.finished for worker in self.workers):
                logger.info("every worker finished on its own: stopping")
                return 0
            for worker in self.workers:
                if self.stop_signal is not None:  # a worker's exit may be that signal's doing
                    break
                if worker.finished:
                    continue
                if worker.process is None:
                    if time.monotonic() >= worker.restart_at:
                        self._start(worker)
                    continue
                status = worker.process.poll()
                if status is None:
                    continue
                pid = worker.process.pid
                worker.process = None
                self._exited(worker, pid)
                if status == BOOT_ERROR:
                    logger.error(
                        "worker %d (pid %d) could not load %s (see above): stopping all",
                        worker.number, pid, self.target,
                    )  # fmt: skip
                    self._stop_all()
                    return 1
                if status == 0:
                    worker.finished = True
                    logger.info(
                        "worker %d (pid %d) finished on its own; not restarted",
                        worker.number, pid,
                    )  # fmt: skip
                    continue
                lived = time.monotonic() - worker.started
                worker.failed_starts = worker.failed_starts + 1 if status == START_ERROR else 0
                if worker.failed_starts >= _FAILED_STARTS:
                    logger.error(
                        "worker %d (pid %d) failed before consuming, the %d%s time in a row: "
                        "it cannot start (see its error above); stopping all",
                        worker.number, pid, worker.failed_starts, _ordinal(worker.failed_starts),
                    )  # fmt: skip
                    self._stop_all()
                    return 1
                quick = lived < _QUICK_DEATH
                worker.restart_at = time.monotonic() + (_QUICK_DEATH if quick else 0.0)
                logger.error(
                    "worker %d (pid %d) %s; restarting it",
                    worker.number, pid, describe_exit(status),
                )  # fmt: skip
            time.sleep(_POLL)
        logger.info(
            "%s received: stopping %d workers", signal.Signals(self.stop_signal).name,
            len(self.workers),
        )  # fmt: skip
        return self._stop_all()

    def _stop_all(self) -> int:
        running = [w for w in self.workers if w.process is not None]
        for worker in running:
            assert worker.process is not None
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.graceful_timeout
        clean = True
        for worker in running:
            assert worker.process is not None
            try:
                status = worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.error(
                    "worker %d (pid %d) still running after %g s: killing it",
                    worker.number, worker.process.pid, self.graceful_timeout,
                )  # fmt: skip
                worker.process.kill()
                status = worker.process.wait()
            self._exited(worker, worker.process.pid)
            if status == 0:
                logger.info("worker %d (pid %d) stopped", worker.number, worker.process.pid)
            else:
                clean = False
                logger.error(
                    "worker %d (pid %d) %s", worker.number, worker.process.pid,
                    describe_exit(status),
                )  # fmt: skip
        return 0 if clean else 1
