"""One fault-injection run: publish N messages, run worker processes, count the outcome.

The counts come from what survives the workers: the ids they appended (and fsynced)
to their ``handled-<pid>.log`` files, and the ids in the SQLite DLQ file they share.

* handled: distinct ids recorded as handled;
* dead-lettered: distinct ids in the DLQ;
* duplicates: handled records beyond the first for an id (at-least-once allows them);
* lost: published ids neither handled nor dead-lettered. Must be 0.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pika.exceptions
import pytest
import redis

from missive.dlq.base import DeadLetterStore
from missive.dlq.sqlite import TABLE, SQLiteDLQ

#: The environment variable that sets N, the messages each scenario publishes.
SIZE_VARIABLE = "MISSIVE_FAULT_N"
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mode:
    """How the workers run their handlers; every scenario runs in each of :data:`MODES`.

    ``serial`` is the adapters' default (one message at a time, the constructor given
    no ``concurrency``); the others pass ``concurrency`` (``FAULT_CONCURRENCY``), and
    ``use_async`` registers an ``async def`` handler (``FAULT_ASYNC``): see ``apps.py``.
    """

    name: str
    concurrency: int = 1
    use_async: bool = False

    @property
    def serial(self) -> bool:
        return self.concurrency == 1 and not self.use_async

    def env(self) -> dict[str, str]:
        """The workers' environment for this mode (none for ``serial``)."""
        if self.serial:
            return {}
        env = {"FAULT_CONCURRENCY": str(self.concurrency)}
        if self.use_async:
            env["FAULT_ASYNC"] = "1"
        return env

    def require_support(self, adapter: type) -> None:
        """Fail now, not after a scenario's patience, if ``adapter`` takes no ``concurrency``."""
        if not self.serial and "concurrency" not in inspect.signature(adapter).parameters:
            pytest.fail(
                f"mode {self.name}: {adapter.__name__} takes no `concurrency` argument "
                f"(yet?), so its workers cannot run {self.concurrency} handlers at once",
                pytrace=False,
            )


#: The modes, by test id: ``test_...[serial]``, ``[threads16]``, ``[async16]``.
MODES = (
    Mode("serial"),
    Mode("threads16", concurrency=16),
    Mode("async16", concurrency=16, use_async=True),
)


def fault_n() -> int:
    """N: ``MISSIVE_FAULT_N``, 2000 by default, in every mode.

    Not fewer in the concurrent modes: a scenario's length hardly depends on N (its
    handlers are paced so that the stream lasts a few seconds, see ``cases.pace``),
    and a smaller N makes some streams too short for their faults (4a, 4b).
    """
    return int(os.environ.get(SIZE_VARIABLE) or 2000)


class Broker(Protocol):
    name: str
    app: str
    url: str

    def publish(self, bodies: Sequence[bytes], ids: Sequence[str]) -> list[bytes]: ...
    def remaining(self) -> int: ...
    def kill_connections(self, at_least: int = 1) -> int: ...
    def env(self, url: str | None = None) -> dict[str, str]: ...
    def proxied_url(self, port: int) -> str: ...
    @property
    def port(self) -> int: ...
    def close(self) -> None: ...


@dataclass
class Counts:
    """One scenario's row of the report."""

    scenario: str
    broker: str
    mode: str
    n: int
    handled: int
    dead_lettered: int
    duplicates: int
    lost: int
    seconds: float
    note: str = ""


#: Every row counted in this pytest session, in order; conftest.py prints them.
ROWS: list[Counts] = []


def body(n: int, action: str = "ok") -> bytes:
    """A message for ``apps.py``: ``{"n": n, "do": action}``."""
    return json.dumps({"n": n, "do": action}).encode()


class Workers:
    """Worker subprocesses (``python -m missive run APP``), each in its own process group.

    Their stderr goes to ``worker-<k>.log`` in the run's directory. :meth:`close`
    kills whatever is still running: call it in a ``finally`` block.
    """

    def __init__(self, app: str, env: dict[str, str], directory: Path) -> None:
        self.app = app
        self.env = env
        self.directory = directory
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, supervise: int | None = None, **extra_env: str) -> subprocess.Popen[bytes]:
        """Start one worker, or with ``supervise`` a ``missive run --workers N`` supervisor."""
        command = [sys.executable, "-m", "missive", "run", self.app, "--log-level", "WARNING"]
        if supervise is not None:
            command += ["--workers", str(supervise), "--graceful-timeout", "30"]
        log = self.directory / f"worker-{len(self.processes) + 1}.log"
        with open(log, "wb") as stderr:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **self.env, **extra_env},
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def running(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes if p.poll() is None]

    def logs(self) -> str:
        """Every worker's stderr so far, for assertions and failure messages."""
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.directory.glob("worker-*.log"))
        )

    def stop(self, timeout: float = 60) -> list[int]:
        """SIGTERM every running worker, wait for each; their exit statuses."""
        running = self.running()
        for process in running:
            process.send_signal(signal.SIGTERM)
        statuses = []
        for process in running:
            try:
                statuses.append(process.wait(timeout))
            except subprocess.TimeoutExpired:
                statuses.append(-999)
        return statuses

    def close(self) -> None:
        """SIGKILL every process group still running (workers of a supervisor too)."""
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


class Run:
    """One scenario on one broker: its files, its workers, its published ids and counts."""

    def __init__(self, broker: Broker, directory: Path, scenario: str, n: int, mode: Mode) -> None:
        self.broker = broker
        self.scenario = scenario
        self.mode = mode
        self.n = n
        self.directory = directory
        self.record_dir = directory / "handled"
        self.record_dir.mkdir()
        self.dlq_path = directory / "dlq.db"
        SQLiteDLQ(self.dlq_path).close()  # created once, before the workers share it
        self.postgres: tuple[str, str] | None = None
        self.published: list[bytes] = []
        self.started = time.monotonic()
        self._next = 0
        self.env = {
            "FAULT_RECORD_DIR": str(self.record_dir),
            "FAULT_DLQ": str(self.dlq_path),
            "PYTHONUNBUFFERED": "1",
            **mode.env(),
        }
        self.workers = Workers(broker.app, {**broker.env(), **self.env}, directory)

    def publish(self, actions: Sequence[str]) -> list[bytes]:
        """Publish one ``{"n", "do"}`` message per action; their ids."""
        first = self._next
        self._next += len(actions)
        bodies = [body(first + i, action) for i, action in enumerate(actions)]
        return self.publish_raw(bodies, [f"m{first + i}" for i in range(len(actions))])

    def publish_raw(self, bodies: Sequence[bytes], ids: Sequence[str]) -> list[bytes]:
        """Publish these bodies (with these ids where the broker takes them); their ids."""
        published = self.broker.publish(bodies, ids)
        self.published.extend(published)
        return published

    def handled(self) -> Counter[bytes]:
        """Every handled record so far, by id."""
        counts: Counter[bytes] = Counter()
        for path in self.record_dir.glob("handled-*.log"):
            counts.update(path.read_bytes().splitlines())
        return counts

    def handled_records(self) -> int:
        """How many handled records there are so far (duplicates included)."""
        return sum(p.read_bytes().count(b"\n") for p in self.record_dir.glob("handled-*.log"))

    def use_postgres_dlq(self, url: str) -> str:
        """Give the workers a PostgreSQL DLQ (own table) instead; its application_name."""
        suffix = os.urandom(6).hex()
        self.postgres = (url, f"missive_faults_{suffix}")
        application_name = f"missive-faults-{suffix}"
        self.workers.env.update(
            FAULT_DLQ_URL=url, FAULT_DLQ_TABLE=self.postgres[1], FAULT_DLQ_APP=application_name
        )
        self._postgres_dlq().close()  # created before the workers share it
        return application_name

    def _postgres_dlq(self) -> DeadLetterStore:
        from missive.dlq.postgres import PostgresDLQ

        assert self.postgres is not None
        url, table = self.postgres
        return PostgresDLQ(url, table=table, application_name="missive-faults-test")

    def drop_postgres_dlq(self) -> None:
        """Drop the PostgreSQL DLQ's table, if one was made."""
        if self.postgres is None:
            return
        import psycopg

        url, table = self.postgres
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_attempts")

    def dead(self) -> set[bytes]:
        """The ids in the DLQ (read directly: a reader waits for no writer in WAL mode)."""
        if self.postgres is not None:
            with self._postgres_dlq() as dlq:
                return set(dlq)
        connection = sqlite3.connect(f"file:{self.dlq_path}?mode=ro", uri=True, timeout=30)
        try:
            rows = connection.execute(f"SELECT message_id FROM {TABLE}").fetchall()
        finally:
            connection.close()
        return {bytes(row[0]) for row in rows}

    def reasons(self) -> dict[bytes, str]:
        """Each dead letter's reason, through the DLQ's own API."""
        store = self._postgres_dlq() if self.postgres else SQLiteDLQ(self.dlq_path, create=False)
        with store as dlq:
            return {record.message_id: str(record.reason) for record in dlq.records()}

    def accounted(self) -> int:
        """How many published ids are handled or dead-lettered."""
        return len(set(self.published) & (set(self.handled()) | self.dead()))

    def wait(self, predicate: Callable[[], object], what: str, timeout: float) -> None:
        """Poll ``predicate``; fail naming ``what`` (with the workers' logs) after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self._holds(predicate):
            if self.workers.processes and not self.workers.running():
                raise AssertionError(
                    f"every worker exited while waiting until {what}\n"
                    f"worker logs (tail):\n{self.workers.logs()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f} s waiting until {what} "
                    f"({self.accounted()} of {len(self.published)} accounted for, "
                    f"{self.broker.remaining()} left on the broker)\n"
                    f"worker logs (tail):\n{self.workers.logs()[-4000:]}"
                )
            time.sleep(0.2)

    @staticmethod
    def _holds(predicate: Callable[[], object]) -> bool:
        # A broker restarting (another test run's scenario 5, say) is "not yet".
        try:
            return bool(predicate())
        except (pika.exceptions.AMQPError, redis.ConnectionError):
            return False

    def wait_handled(self, records: int, timeout: float) -> None:
        """Wait until the workers recorded ``records`` handled messages."""
        self.wait(lambda: self.handled_records() >= records, f"{records} are handled", timeout)

    def wait_done(self, timeout: float, quiet: float = 1.0) -> None:
        """Wait until every published id is accounted for, the broker holds none ready,
        and the workers have recorded nothing for ``quiet`` seconds.

        The quiet time lets redeliveries that a worker still holds (RabbitMQ counts
        only ready messages) be handled before the workers are stopped.
        """
        total = len(self.published)
        last = (-1, -1)
        since = time.monotonic()

        def done() -> bool:
            nonlocal last, since
            progress = (self.handled_records(), len(self.dead()))
            if progress != last:
                last, since = progress, time.monotonic()
            if time.monotonic() - since < quiet:
                return False
            return self.accounted() == total and self.broker.remaining() == 0

        self.wait(done, "every message is handled or dead-lettered", timeout)

    def finish(self, note: str = "", *, report: bool = True) -> Counts:
        """Stop the workers gracefully, count, and check that nothing was lost.

        With ``report`` (the default) the counts are a row of the session's report.
        """
        statuses = self.workers.stop()
        handled = self.handled()
        dead = self.dead()
        published = set(self.published)
        assert len(published) == len(self.published), "the broker gave two messages one id"
        lost = published - set(handled) - dead
        both = len(set(handled) & dead)
        if both:
            note = f"{note}; {both} both handled and dead-lettered".lstrip("; ")
        counts = Counts(
            scenario=self.scenario,
            broker=self.broker.name,
            mode=self.mode.name,
            n=len(self.published),
            handled=len(set(handled) & published),
            dead_lettered=len(dead & published),
            duplicates=sum(c - 1 for c in handled.values()),
            lost=len(lost),
            seconds=time.monotonic() - self.started,
            note=note,
        )
        if report:
            ROWS.append(counts)
        assert not lost, f"{len(lost)} messages lost, e.g. {sorted(lost)[:5]}"
        assert not set(handled) - published, "a handled id was never published"
        assert self.broker.remaining() == 0, "messages are left on the broker"
        assert all(s == 0 for s in statuses), f"a worker did not stop cleanly: {statuses}"
        return counts
