"""ConcurrentConsumer: the delivery loop's consuming, with many messages in flight.

The loop's thread still does all the talking to the transport: it receives rows,
hands each to the workers (threads, or tasks on the run's event loop), and settles
each row once its worker hands it back. Rows complete out of order, so the loop
keeps a window of the rows it received, in order: a cumulative ack only ever
covers a run of settled rows at its head, and a row settled behind one still
running is acked on its own where the transport can (``ack_out_of_order``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import time
from collections import deque
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any, Generic

from missive._aio import is_async_callable
from missive._names import callable_name
from missive._typing import M
from missive.errors import DLQWriteError, HandlingError
from missive.routing import raised
from missive.runtime.policy import Policy, Verdict
from missive.runtime.transport import Batch, Capability, Fault
from missive.runtime.workers import (
    ACK,
    DONE,
    NO_KEY,
    QUEUED,
    AsyncWorkers,
    Job,
    ThreadWorkers,
    Workers,
)

if TYPE_CHECKING:
    from missive.runtime.loop import DeliveryLoop

__all__ = ["ConcurrentConsumer"]

logger = logging.getLogger("missive.runtime")

_ACK = Verdict.ACK
_DEAD_LETTERED = Verdict.DEAD_LETTERED
#: How long a receive waits while rows are in flight, so that finished ones are
#: settled (and the broker sends more) without waiting for a new message.
SETTLE_INTERVAL = 0.002


class ConcurrentConsumer(Generic[M]):
    """Consumes one connection with up to ``adapter.concurrency`` messages in flight.

    :param delivery: the delivery loop, for its adapter, transport and failure path.
    :param policy: the decisions for each message.
    """

    def __init__(self, delivery: DeliveryLoop[M], policy: Policy[M]) -> None:
        adapter = delivery.adapter
        self.delivery = delivery
        self.policy = policy
        self.transport = transport = delivery.transport
        self.size = size = adapter.concurrency
        #: Rows received and not yet settled, in delivery order.
        self.window: deque[Job[M]] = deque()
        #: At most this many rows are held (running or waiting): the rest stay on the broker.
        self.limit = 2 * size
        #: Receive again only once this few are held, so that each read takes many.
        self.low_water = self.limit - max(1, size // 2)
        #: Jobs the workers handed back; ``None`` only wakes the loop (a stop).
        self.completions: SimpleQueue[Job[M] | None] = SimpleQueue()
        self._fresh: list[Job[M]] = []  # jobs acked in this settle pass
        self._flush = False  # a redelivery was acked in this pass: send at once
        self._executor: concurrent.futures.Executor | None = None
        self.observers = adapter.processor.observers
        self.workers = self._workers(policy, size)
        self._redelivers = bool(transport.capabilities & Capability.REDELIVERY)

    def _workers(self, policy: Policy[M], size: int) -> Workers[M]:
        context = policy.context
        processor = context.processor
        hooks = (
            processor.before_handling_hooks
            + processor.after_handling_hooks
            + processor.before_processing_hooks
            + processor.after_processing_hooks
        )
        if processor.router.any_async or any(map(is_async_callable, hooks)):
            # One pool for the whole run, kept across reconnections: a task of the
            # connection before may still be using it.
            executor = context.executor
            if executor is None:
                executor = context.executor = self.delivery.own_executor(size)
            self._executor = executor
            return AsyncWorkers(size, self._arun, self.completions.put, context.loop_thread)
        return ThreadWorkers(size, self._run, self.completions.put)

    def _run(self, job: Job[M]) -> None:
        """Handle ``job`` on a worker thread."""
        observers = self.observers
        if observers:
            observers.message_received(job.message, job.count)
        job.verdict = self.policy.handle(
            job.message, job.count, job.problem, job.row_id is not None
        )

    async def _arun(self, job: Job[M]) -> None:
        """Handle ``job`` on the event loop."""
        observers = self.observers
        if observers:
            observers.message_received(job.message, job.count)
        job.verdict = await self.policy.ahandle(
            job.message, job.count, job.problem, job.row_id is not None, self._executor
        )

    def wake(self) -> None:
        """End a wait for a worker to finish (a stop). Safe in a signal handler."""
        self.completions.put(None)

    def run(self) -> None:
        """Receive, hand out and settle until a stop or the end of input."""
        delivery, transport = self.delivery, self.transport
        adapter = delivery.adapter
        stopping = adapter.stop_event.is_set
        receive, window, limit, low_water = (
            transport.receive,
            self.window,
            self.limit,
            self.low_water,
        )
        poll = adapter.poll_timeout
        observers = adapter.processor.observers
        try:
            while True:
                self._settle(None)
                if stopping():
                    self._stop(None, 0)
                    return
                if len(window) > low_water:
                    self._settle(poll)  # enough held: wait for a worker to finish
                    continue
                batch = receive(limit - len(window), SETTLE_INTERVAL if window else poll)
                if observers:
                    delivery.polled(len(batch.bodies))
                stopped_at = 0 if stopping() else self._hand_out_in_turn(batch)
                if stopped_at is not None:
                    self._stop(batch, stopped_at)
                    return
                if batch.ended:
                    self._wait(math.inf)
                    transport.flush()
                    return
        except (HandlingError, DLQWriteError):
            # run() stops with this error (stop_on_loss): the rows in flight finish
            # first, so that nothing before the error's row is left half done.
            self._finish_in_flight()
            raise
        finally:
            self.workers.close()

    def _hand_out_in_turn(self, batch: Batch) -> int | None:
        """Hand the rows of ``batch`` to the workers; each redelivery runs alone.

        A redelivery may be the neighbour of a message that crashed the worker: as in
        the serial loop, it runs with nothing else in flight and is settled (acks sent)
        before anything else starts, so that the next crash cannot bring it back.
        Returns the row a stop came before, or ``None``.
        """
        counts, suspect = batch.counts, batch.suspect
        start = 0
        for i in range(len(counts)):
            if counts[i] != 1 and suspect(i):
                self._hand_out(batch, start, i)
                stopped_at = self._run_alone(batch, i)
                if stopped_at is not None:
                    return stopped_at
                start = i + 1
        self._hand_out(batch, start)
        return None

    def _run_alone(self, batch: Batch, i: int) -> int | None:
        """Run row ``i`` with nothing else in flight and settle it; on a stop, the row
        the stop comes before."""
        adapter = self.delivery.adapter
        stopping, poll, window = adapter.stop_event.is_set, adapter.poll_timeout, self.window
        while window:
            if stopping():
                return i
            self._settle(poll)
        self._hand_out(batch, i, i + 1)
        while window:
            if stopping():
                return i + 1
            self._settle(poll)
        return None

    def _hand_out(self, batch: Batch, start: int, end: int | None = None) -> None:
        """Hand the rows ``start:end`` of ``batch`` to the workers, at once."""
        end = len(batch) if end is None else end
        if start < end:
            self.workers.submit([self._job(batch, i) for i in range(start, end)])

    def _job(self, batch: Batch, i: int) -> Job[M]:
        """Row ``i``'s message, as a job in the window."""
        delivery = self.delivery
        adapter = delivery.adapter
        body, row_id, attributes = batch.bodies[i], batch.ids[i], batch.attributes[i]
        message = adapter.message_cls(body, row_id, attributes)
        count = batch.counts[i]
        problems = batch.problems
        problem = problems.get(i) if problems else None
        key: Any = NO_KEY
        ordering_key = adapter.ordering_key
        if ordering_key is not None and problem is None:
            try:
                key = ordering_key(message)
                hash(key)
            except Exception as exc:
                what = f"ordering_key {callable_name(ordering_key)!r}"
                problem = raised(what, exc)
                key = NO_KEY
        job = Job(message, body, row_id, attributes, count, batch.handles[i], problem, key)
        if count != 1:
            job.suspect = batch.suspect(i)
        self.window.append(job)
        return job

    def _settle(self, wait: float | None) -> None:
        """Settle the jobs the workers handed back (waiting up to ``wait`` s for one),
        then ack the settled run at the head of the window, and those behind it where
        the transport can ack out of order."""
        completions, fresh = self.completions, self._fresh
        try:
            job = completions.get_nowait() if wait is None else completions.get(timeout=wait)
        except Empty:
            window = self.window
            if not fresh and not (window and window[0].state >= ACK):
                return  # nothing settled since the last pass
        else:
            while True:
                if job is not None:
                    self._apply(job)
                try:
                    job = completions.get_nowait()
                except Empty:
                    break
        window, transport, observers = self.window, self.transport, self.observers
        prefix = []
        while window and window[0].state >= ACK:
            job = window.popleft()
            if job.state == ACK:
                prefix.append(job)
                job.state = DONE
        if prefix:
            transport.ack([job.handle for job in prefix])
            if observers:
                for job in prefix:
                    observers.acked(job.message)
        early = [job for job in fresh if job.state == ACK]
        if early and transport.ack_out_of_order([job.handle for job in early]):
            for job in early:
                job.state = DONE
                if observers:
                    observers.acked(job.message)
        fresh.clear()
        if self._flush:
            self._flush = False
            transport.flush()

    def _apply(self, job: Job[M]) -> None:
        """What the loop does with one handed-back job: its settle call and its events."""
        verdict, message = job.verdict, job.message
        delivery = self.delivery
        if verdict is _ACK or verdict is _DEAD_LETTERED:
            if verdict is _DEAD_LETTERED:
                self.transport.dead_lettered(job.handle)
            job.state = ACK
            self._fresh.append(job)
            if job.suspect:  # a redelivery: settle it now (see DeliveryLoop._consume)
                self._flush = True
            return
        job.state = DONE
        if isinstance(verdict, BaseException) and not isinstance(
            verdict, HandlingError | DLQWriteError
        ):  # a BaseException from below the processor (SystemExit in a handler)
            raise verdict
        delivery.give_back(self.policy, message, job.handle, verdict, job.count)

    def _stop(self, batch: Batch | None, start: int) -> None:
        """Take nothing new; hand back or finish what was received; wait for the rest."""
        transport, delivery = self.transport, self.delivery
        if transport.capabilities & Capability.HAND_BACK:
            self._hand_back(batch, start)
        elif batch is not None:
            self._hand_out(batch, start)
        if transport.drain_timeout is not None:
            self._drain(transport.drain_timeout)
        # Without redelivery a message left running would be lost: wait for it.
        graceful = delivery.adapter.graceful_timeout if self._redelivers else math.inf
        self._wait(graceful)
        transport.flush()

    def _hand_back(self, batch: Batch | None, start: int) -> None:
        """Give back the rows no worker started, and those of ``batch`` from ``start``."""
        unstarted = set(self.workers.take_unstarted())
        rows = [
            (job.body, job.row_id, job.attributes, job.handle, job.count)
            for job in self.window
            if job in unstarted
        ]
        if batch is not None:
            rows += zip(
                batch.bodies[start:],
                batch.ids[start:],
                batch.attributes[start:],
                batch.handles[start:],
                batch.counts[start:],
                strict=True,
            )
        if not rows:
            return
        self.window = deque(job for job in self.window if job not in unstarted)
        # The transport's own batch, where it can: it may add rows it still held.
        back = Batch() if batch is None else batch
        back.clear()
        for body, row_id, attributes, handle, count in rows:
            back.add(body, row_id, attributes, handle, count)
        self.transport.hand_back(back, 0)
        observers = self.delivery.adapter.processor.observers
        if observers:
            observers.handed_back(len(rows))

    def _drain(self, drain_timeout: float) -> None:
        """Go on receiving what the transport still sends after ``begin_drain``; what no
        worker started within ``drain_timeout`` is dead-lettered (it cannot come back)."""
        transport, window = self.transport, self.window
        transport.begin_drain()
        deadline = time.monotonic() + drain_timeout
        ended = False
        try:
            while not ended:
                self._settle(None)
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                batch = transport.receive(self.limit, min(left, SETTLE_INTERVAL * 50))
                self._hand_out(batch, 0)
                ended = batch.ended
        except Exception as exc:
            if transport.fault(exc) is Fault.FATAL:
                raise
            logger.warning("connection failed while stopping: %s", transport.describe(exc))
        poll = self.delivery.adapter.poll_timeout
        while any(job.state == QUEUED for job in window):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._settle(min(left, poll))
        reason = (
            f"the adapter stopped before handling it (drain_timeout={drain_timeout} s "
            f"passed); {transport.cannot_redeliver}"
        )
        for job in self.workers.take_unstarted():
            if self.observers:
                self.observers.message_received(job.message, job.count)
            job.verdict = self.policy.dead_letter(job.message, reason)
            self._apply(job)
        if not ended:
            logger.warning(
                "stopped after drain_timeout=%s s with the subscription still open; "
                "messages %s sends after this point are not received",
                drain_timeout,
                transport.broker_name,
            )

    def _finish_in_flight(self) -> None:
        """Settle the rows still running, logging (not raising) any that fail too."""
        for job in self.workers.take_unstarted():
            job.state = DONE
        while any(job.state < ACK for job in self.window):
            finished = self.completions.get()
            if finished is None:
                continue
            try:
                self._apply(finished)
            except (HandlingError, DLQWriteError) as exc:
                logger.error("%s", exc)
        self._settle(None)

    def _wait(self, timeout: float) -> None:
        """Settle the rows in flight as they finish, for up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        window = self.window
        while window:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._settle(min(left, self.delivery.adapter.poll_timeout))
        if window:
            running = [job.message.message_id for job in window if job.state < ACK]
            logger.warning(
                "stopped after graceful_timeout=%s s with %d messages still being handled; "
                "they are not acked, so %s delivers them again: %s",
                timeout,
                len(running),
                self.transport.broker_name,
                ", ".join(repr(message_id) for message_id in running),
            )
