"""Workers: run many messages at once for the delivery loop, on threads or an event loop.

The delivery loop stays the only thread that talks to the transport: it hands each
received row to the workers as a :class:`Job`, and the workers hand each job back,
its verdict set, through ``done``. Jobs that share an ordering key run one at a
time, in the order they were submitted; others run side by side.
"""

from __future__ import annotations

import abc
import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any, Generic

from missive._typing import M

if TYPE_CHECKING:
    from missive._aio import LoopThread

__all__ = ["AsyncWorkers", "Job", "KeyedQueue", "ThreadWorkers", "Workers"]

#: A job's ordering key when it has none: it never waits for another job.
NO_KEY: Any = object()

#: Job states.
QUEUED, RUNNING, SETTLE, ACK, DONE = range(5)


class Job(Generic[M]):
    """One received row on its way through the workers and back to the loop.

    ``state`` goes QUEUED, RUNNING, SETTLE (the verdict is set, the loop has not
    settled it), then ACK (to be acked once every earlier row is settled) or DONE.
    """

    __slots__ = (
        "attributes",
        "body",
        "count",
        "handle",
        "key",
        "message",
        "problem",
        "row_id",
        "state",
        "suspect",
        "verdict",
    )

    def __init__(
        self,
        message: M,
        body: bytes,
        row_id: bytes | None,
        attributes: dict[str, Any],
        count: int | None,
        handle: Any,
        problem: str | None,
        key: Hashable,
    ) -> None:
        self.message = message
        self.body = body
        self.row_id = row_id
        self.attributes = attributes
        self.count = count
        self.handle = handle
        self.problem = problem
        self.key = key
        self.state = QUEUED
        self.verdict: Any = None
        #: A redelivery after a delivery that may have crashed the worker (see Batch).
        self.suspect = False


class KeyedQueue:
    """The jobs ready to start, in submission order, at most one running per key.

    Not thread-safe: its owner serialises the calls.
    """

    __slots__ = ("ready", "waiting")

    def __init__(self) -> None:
        #: Jobs that may start now, oldest first.
        self.ready: deque[Job[Any]] = deque()
        #: For each key with a job started or ready: the jobs behind it, in order.
        self.waiting: dict[Hashable, deque[Job[Any]]] = {}

    def put(self, job: Job[Any]) -> None:
        """Queue ``job``: ready now, or behind the job of its key already queued."""
        key = job.key
        if key is not NO_KEY:
            behind = self.waiting.get(key)
            if behind is not None:
                behind.append(job)
                return
            self.waiting[key] = deque()
        self.ready.append(job)

    def done(self, job: Job[Any]) -> None:
        """``job`` finished: the next job of its key, if any, becomes ready."""
        key = job.key
        if key is not NO_KEY:
            behind = self.waiting[key]
            if behind:
                self.ready.append(behind.popleft())
            else:
                del self.waiting[key]

    def take_all(self) -> list[Job[Any]]:
        """Remove and return every job not started (in no particular order); for a stop,
        after which nothing is put."""
        jobs = [*self.ready, *(job for behind in self.waiting.values() for job in behind)]
        self.ready.clear()
        self.waiting = {key: deque() for key in self.waiting}
        return jobs


class Workers(abc.ABC, Generic[M]):
    """Runs up to ``size`` jobs at once; calls ``done(job)`` after each.

    :param size: how many jobs run at once.
    :param done: called with each finished job, from the worker that ran it.
    """

    def __init__(self, size: int, done: Callable[[Job[M]], None]) -> None:
        self.size = size
        self.done = done
        self._queue = KeyedQueue()

    @abc.abstractmethod
    def submit(self, jobs: list[Job[M]]) -> None:
        """Start each of ``jobs`` when a worker and its key are free."""

    @abc.abstractmethod
    def take_unstarted(self) -> list[Job[M]]:
        """Remove every job not started yet and return them (in no particular order)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Start no more jobs; the running ones go on, their results are dropped."""


class ThreadWorkers(Workers[M]):
    """``size`` threads, each running one job at a time: ``run(job)`` sets its verdict."""

    def __init__(
        self, size: int, run: Callable[[Job[M]], None], done: Callable[[Job[M]], None]
    ) -> None:
        super().__init__(size, done)
        self._run = run
        self._lock = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"missive-worker-{n}", daemon=True)
            for n in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, jobs: list[Job[M]]) -> None:
        with self._lock:
            put = self._queue.put
            for job in jobs:
                put(job)
            self._lock.notify(len(self._queue.ready))

    def take_unstarted(self) -> list[Job[M]]:
        with self._lock:
            return self._queue.take_all()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._queue.take_all()
            self._lock.notify_all()

    def _work(self) -> None:
        lock, queue, run, done = self._lock, self._queue, self._run, self.done
        ready = queue.ready
        while True:
            with lock:
                while not ready:
                    if self._closed:
                        return
                    lock.wait()
                job = ready.popleft()
                job.state = RUNNING
            try:
                run(job)
            except BaseException as exc:  # a bug below the processor: the loop reports it
                job.verdict = exc
            job.state = SETTLE
            with lock:
                queue.done(job)
                if len(ready) > 1:
                    lock.notify()
            done(job)


class AsyncWorkers(Workers[M]):
    """``size`` tasks on ``loop_thread``, each running one job at a time: ``await
    run(job)`` sets its verdict.

    The finished jobs of one turn of the event loop are handed back together, so that
    the delivery loop's thread wakes once for them, not once each.
    """

    def __init__(
        self,
        size: int,
        run: Callable[[Job[M]], Awaitable[None]],
        done: Callable[[Job[M]], None],
        loop_thread: LoopThread,
    ) -> None:
        super().__init__(size, done)
        self._arun = run
        self._loop_thread = loop_thread
        self._loop = loop_thread.loop
        self._closed = False
        self._idle: list[asyncio.Future[None]] = []  # workers waiting for a job
        self._finished: list[Job[M]] = []  # handed back at the end of this turn
        # Kept: the event loop holds only weak references to its tasks.
        self._tasks = [loop_thread.submit(self._work()) for _ in range(size)]

    def submit(self, jobs: list[Job[M]]) -> None:
        self._loop.call_soon_threadsafe(self._put, jobs)

    def take_unstarted(self) -> list[Job[M]]:
        return self._loop_thread.call(self._queue.take_all)

    def close(self) -> None:
        def close() -> None:
            self._closed = True
            self._queue.take_all()
            self._wake(len(self._idle))

        self._loop_thread.call(close)

    def _put(self, jobs: list[Job[M]]) -> None:
        if self._closed:
            return
        put = self._queue.put
        for job in jobs:
            put(job)
        self._wake(len(self._queue.ready))

    def _wake(self, count: int) -> None:
        idle = self._idle
        while count > 0 and idle:
            waiter = idle.pop()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    async def _work(self) -> None:
        ready, run, queue = self._queue.ready, self._arun, self._queue
        while not self._closed:
            if not ready:
                waiter = self._loop.create_future()
                self._idle.append(waiter)
                await waiter
                continue
            job = ready.popleft()
            job.state = RUNNING
            try:
                await run(job)
            except asyncio.CancelledError:  # the loop is closing: left for redelivery
                raise
            except BaseException as exc:  # a bug below the processor: the loop reports it
                job.verdict = exc
            queue.done(job)
            if len(ready) > 1:
                self._wake(1)
            job.state = SETTLE
            finished = self._finished
            finished.append(job)
            if len(finished) == 1:
                self._loop.call_soon(self._hand_back_finished)

    def _hand_back_finished(self) -> None:
        finished, self._finished = self._finished, []
        done = self.done
        for job in finished:
            done(job)
