"""``missive run MODULE:ADAPTER [--workers N] [--concurrency N]``: run an adapter, or N
worker processes.

``--concurrency N`` sets the adapter's ``concurrency`` in each process: up to N
messages handled at once (threads for synchronous handlers, an event loop for
``async def`` ones).

Without ``--workers`` the adapter runs in this process: it stops on SIGINT and
SIGTERM as every adapter does. With ``--workers N`` this process is a supervisor:
it starts N workers (each ``python -m missive run MODULE:ADAPTER``, with
``MISSIVE_WORKER`` set to its number), restarts any that dies, logging its exit
status, and on SIGTERM or SIGINT asks each to stop (SIGTERM), waits for them to
finish the message in hand and run their ``after_processing`` hooks, and kills
those still running after ``--graceful-timeout`` seconds.

A worker that exits 0 on its own (its input ended) is not restarted; once all have,
the supervisor exits 0. A worker that cannot load the adapter, or one whose
adapter cannot be shared by several processes (stdin), stops them all at once; one
whose adapter fails 3 times in a row before it starts consuming (a missing queue, a
wrong password: exit status 4) stops them all too. Each such stop is one ERROR
line, and the exit status is 1.

``--http HOST:PORT`` serves /healthz (liveness), /readyz (readiness) and /metrics
(with the prometheus extra) there; with ``--workers`` the supervisor serves them for
all its workers. ``--log-format json`` logs one JSON object a line. See
docs/cli.md and docs/deployment.md.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import math
import os
import signal
import sys
from types import FrameType
from typing import Any

from missive.adapters.base import Adapter
from missive.cli._common import CLIError, import_object, safe_repr
from missive.cli._output import Output
from missive.cli._run_ops import SupervisorOps, address, configure_logging, start_worker_ops
from missive.cli._supervisor import (
    BOOT_ERROR,
    START_ERROR,
    SUPERVISOR_VARIABLE,
    WORKER_VARIABLE,
    WORKERS_VARIABLE,
    Supervisor,
)
from missive.errors import MissiveError
from missive.health import DEFAULT_HANDLER_TIMEOUT

__all__ = ["add_parser", "load_adapter"]

logger = logging.getLogger("missive.cli.run")

_MAX_WORKERS = 1024
_PR_SET_PDEATHSIG = 1


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``run`` to the command's subparsers."""
    run = sub.add_parser(
        "run",
        help="run an adapter, in this process or in N supervised workers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "target", metavar="MODULE:ADAPTER", help="an adapter, or a function returning one"
    )
    run.add_argument("-w", "--workers", type=_positive, metavar="N", help="run N worker processes")
    run.add_argument(
        "-c",
        "--concurrency",
        type=_positive,
        metavar="N",
        help="handle up to N messages at once in each process (default: the adapter's)",
    )
    run.add_argument(
        "--graceful-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long workers get to stop before they are killed (default: 30)",
    )
    run.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="the lowest level logged to stderr (default: INFO)",
    )
    run.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text lines, or one JSON object a line (default: text)",
    )
    run.add_argument(
        "--http",
        type=address,
        metavar="HOST:PORT",
        help="serve /healthz, /readyz and /metrics there (with --workers: for all of them)",
    )
    run.add_argument(
        "--handler-timeout",
        type=_seconds,
        default=DEFAULT_HANDLER_TIMEOUT,
        metavar="SECONDS",
        help="with --http: a handler running longer fails /healthz; 0 for no limit "
        f"(default: {DEFAULT_HANDLER_TIMEOUT:g})",
    )
    run.set_defaults(func=_run)


def _positive(text: str) -> int:
    value = int(text) if text.isascii() and text.isdigit() and len(text) <= 6 else 0
    if not 1 <= value <= _MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 1 to {_MAX_WORKERS}, not {text[:40]!r}"
        )
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text) if text.isascii() else math.nan
    except ValueError:
        value = math.nan
    if not 0 <= value <= 86400:  # also false for nan
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds from 0 to 86400, not {text[:40]!r}"
        )
    return value


def load_adapter(path: str) -> Adapter[Any]:
    """The adapter at ``path``: an :class:`~missive.Adapter`, or a function returning one.

    :raises CLIError: if it does not import, or is or returns something else.
    """
    found = import_object(path, "adapter")
    if not isinstance(found, Adapter) and callable(found):
        try:
            found = found()
        except Exception as exc:
            raise CLIError(f"{path!r} raised {type(exc).__name__}: {exc} when called") from None
        if not isinstance(found, Adapter):
            raise CLIError(f"{path!r} returned {safe_repr(found)}, not a missive.Adapter")
    if not isinstance(found, Adapter):
        raise CLIError(
            f"{path!r} is {type(found).__name__} {safe_repr(found)}, not a missive.Adapter "
            "or a function returning one"
        )
    return found


def _run(args: argparse.Namespace, out: Output) -> int:
    configure_logging(args.log_level, args.log_format)
    if args.workers is None:
        return _run_here(args.target, out, args.concurrency, args)
    supervisor = Supervisor(args.target, args.workers, args.graceful_timeout, args.log_level)
    supervisor.concurrency = args.concurrency
    supervisor.options = ["--log-format", args.log_format]
    supervisor.options += ["--handler-timeout", str(args.handler_timeout)]
    if args.http is None:
        return supervisor.run()
    ops = SupervisorOps(supervisor, args.http)
    try:
        return supervisor.run()
    finally:
        ops.close()


def _run_here(target: str, out: Output, concurrency: int | None, args: argparse.Namespace) -> int:
    worker = os.environ.get(WORKER_VARIABLE)
    if worker:
        _stop_with_supervisor()
    adapter: Adapter[Any] | None = None
    early: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Until the adapter handles signals itself: the supervisor's SIGTERM while the
        # worker was loading is a request to stop, not a crash.
        early.append(signum)
        if adapter is not None:
            adapter.stop()

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_signal)} if worker else {}
    try:
        try:
            adapter = load_adapter(target)
        except CLIError as exc:
            out.error(str(exc))
            return BOOT_ERROR if worker else 1
        if early:
            logger.info("stopped before starting")
            return 0
        name = type(adapter).__name__
        if concurrency is not None:
            adapter.concurrency = concurrency
        if worker and not adapter.shareable and int(os.environ.get(WORKERS_VARIABLE, "1")) > 1:
            out.error(
                f"{name} from {target} cannot be shared by several worker processes: each "
                "would read its own part of the input; run it without --workers"
            )
            return BOOT_ERROR
        logger.info("running %s from %s%s", name, target, f" (worker {worker})" if worker else "")
        timeout = args.handler_timeout or None
        ops = start_worker_ops(adapter, args.http, timeout, worker)
        try:
            adapter.run()
        except MissiveError as exc:
            out.error(f"{name} stopped: {_with_notes(exc)}")
            return _failed(adapter)
        except Exception as exc:
            # A configuration error (a wrong password, a missing queue): one line.
            logger.error("%s stopped: %s: %s", name, type(exc).__name__, _with_notes(exc))
            logger.debug("the error's traceback", exc_info=True)
            return _failed(adapter)
        finally:
            if ops is not None:
                ops.close()
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _failed(adapter: Adapter[Any]) -> int:
    """The exit status of a run that raised: whether it had got as far as consuming."""
    return 1 if adapter.wait_ready(0) else START_ERROR


def _with_notes(exc: BaseException) -> str:
    """The error's text and its notes (the input line, the queue...) on one line."""
    text = str(exc) or repr(exc)
    return " ".join([text, *getattr(exc, "__notes__", ())])


def _stop_with_supervisor() -> None:
    # A worker whose supervisor dies (even by SIGKILL) gets SIGTERM and stops
    # gracefully, instead of running on unsupervised (Linux only).
    supervisor = os.environ.get(SUPERVISOR_VARIABLE)
    if not sys.platform.startswith("linux") or not supervisor:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != supervisor:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
