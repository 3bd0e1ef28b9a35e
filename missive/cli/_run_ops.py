"""What ``missive run`` adds for operations: ``--http`` (probes and metrics), in one
process or across supervised workers, and ``--log-format``.

One process: :func:`missive.health.serve` on the ``--http`` address. With
``--workers N`` the supervisor serves it: its workers write their health to status
files in a directory it names in ``MISSIVE_HEALTH_DIR`` (see
:mod:`missive._worker_health`) and, with prometheus_client installed, their metrics
to a directory it names in ``PROMETHEUS_MULTIPROC_DIR``, which its ``/metrics`` adds
up (prometheus_client's multiprocess mode: one port to scrape, whatever N is, and
counters that survive a worker's restart). Both directories are new for each run and
removed at its end.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from missive._ops_server import OpsServer, metrics_exposition, parse_address
from missive._worker_health import HEALTH_DIR_VARIABLE, StatusWriter, WorkersHealth, status_path
from missive.cli._common import CLIError
from missive.health import Health, serve

if TYPE_CHECKING:
    from missive.adapters.base import Adapter
    from missive.cli._supervisor import Supervisor

__all__ = ["SupervisorOps", "address", "configure_logging", "start_worker_ops"]

_MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


class Closeable(Protocol):
    """What :func:`start_worker_ops` returns: something to close after the run."""

    def close(self) -> None:
        """Stop serving or writing."""


def address(text: str) -> str:
    """``--http``'s type: a ``HOST:PORT`` that parses, kept as written."""
    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def configure_logging(level: str, log_format: str) -> None:
    """Log to stderr at ``level``, as text or one JSON object a line (``missive.logs``)."""
    logging.basicConfig(level=level, stream=sys.stderr, format=_TEXT_FORMAT)
    if log_format == "json":
        from missive.logs import JSONFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JSONFormatter())
    if level != "DEBUG":
        # pika logs each failed connection attempt at ERROR, in about eight lines and
        # a traceback; the adapter says the same in one WARNING line.
        logging.getLogger("pika").setLevel(logging.CRITICAL)


def start_worker_ops(
    adapter: Adapter[Any], http: str | None, handler_timeout: float | None, worker: str | None
) -> Closeable | None:
    """Serve ``--http`` for ``adapter`` here; or, in a worker of a supervisor that serves
    it, write this worker's health for the supervisor and record its metrics.

    :raises CLIError: if the ``--http`` address cannot be bound.
    """
    health = Health(handler_timeout=handler_timeout)
    directory = os.environ.get(HEALTH_DIR_VARIABLE)
    if worker and directory:
        metrics_exposition(adapter)  # instruments it, if the extra is installed
        adapter.add_observer(health)
        writer = StatusWriter(health, status_path(Path(directory), int(worker)))
        writer.start()
        return writer
    if http is None:
        return None
    try:
        return serve(adapter, http, health=health)
    except OSError as exc:
        raise CLIError(f"cannot serve --http on {http}: {exc.strerror or exc}") from None


class SupervisorOps:
    """The supervisor's side of ``--http``: the directories, the server, the clean-up.

    :raises CLIError: if the address cannot be bound (nothing is left behind then).
    """

    def __init__(self, supervisor: Supervisor, http: str) -> None:
        self.supervisor = supervisor
        self.health_dir = Path(tempfile.mkdtemp(prefix="missive-health-"))
        self.metrics_dir: Path | None = None
        self._previous = os.environ.get(_MULTIPROC_VARIABLE)
        if importlib.util.find_spec("prometheus_client") is not None:
            # Set before prometheus_client is imported, here and in every worker.
            self.metrics_dir = Path(tempfile.mkdtemp(prefix="missive-metrics-"))
            os.environ[_MULTIPROC_VARIABLE] = str(self.metrics_dir)
        host, port = parse_address(http)
        probes = WorkersHealth(self.health_dir, supervisor.running, supervisor.stopping)
        try:
            self.server = OpsServer(host, port, probes, metrics_exposition())
        except OSError as exc:
            self._remove()
            raise CLIError(f"cannot serve --http on {http}: {exc.strerror or exc}") from None
        supervisor.env[HEALTH_DIR_VARIABLE] = str(self.health_dir)
        supervisor.on_exit = self.worker_exited
        self.server.start()

    def worker_exited(self, number: int, pid: int) -> None:
        """Forget a worker that exited: its status file and its live gauges."""
        with contextlib.suppress(OSError):
            status_path(self.health_dir, number).unlink()
        if self.metrics_dir is not None:
            from missive.metrics import mark_worker_dead

            mark_worker_dead(pid)

    def close(self) -> None:
        """Stop serving; remove both directories."""
        self.server.close()
        self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self.health_dir, ignore_errors=True)
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            if self._previous is None:
                os.environ.pop(_MULTIPROC_VARIABLE, None)
            else:
                os.environ[_MULTIPROC_VARIABLE] = self._previous
