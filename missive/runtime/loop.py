"""DeliveryLoop: the one pull loop, run by every adapter that has a transport.

It owns, for every transport: building each message, delivery counting and the
poison rule (through :class:`~missive.runtime.policy.Policy`), calling the
processor, settling each row, coalescing acks, reconnecting with backoff, the stop
and drain sequence, signals, and the events observers see.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Generic, NoReturn

from missive._typing import M
from missive.attempts import RetryLater
from missive.context import Outcome
from missive.errors import DLQWriteError, HandlingError
from missive.runtime.backoff import Backoff
from missive.runtime.concurrent import ConcurrentConsumer
from missive.runtime.deferred import UnstoredError, store_deferred
from missive.runtime.policy import Policy, Requeue, Verdict
from missive.runtime.transport import Batch, Capability, Fault, Transport

if TYPE_CHECKING:
    from missive.adapters.base import Adapter

__all__ = ["DeliveryLoop"]

logger = logging.getLogger("missive.runtime")

_ACK = Verdict.ACK
_DEAD_LETTERED = Verdict.DEAD_LETTERED
_REQUEUE = Verdict.REQUEUE
_ACKED = Outcome.ACKED
_DEAD = Outcome.DEAD_LETTERED


class DeliveryLoop(Generic[M]):
    """Runs ``adapter``'s processor on ``transport`` until the input ends or a stop.

    :param adapter: the adapter: its message class, processor, stop event and
        settings (``max_deliveries``, ``retry_delay``, ``max_reconnect_delay``,
        ``batch_size``, ``poll_timeout``).
    :param transport: the connection primitives.
    """

    def __init__(self, adapter: Adapter[M], transport: Transport) -> None:
        self.adapter = adapter
        self.transport = transport
        #: The thread that runs :meth:`run`, once it runs.
        self.thread: threading.Thread | None = None
        self._stop_failure: BaseException | None = None
        self._consumer: ConcurrentConsumer[M] | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._backlog_due = 0.0

    def run(self) -> None:
        """Consume until the input ends, a stop, or a fatal error (which propagates)."""
        adapter, transport = self.adapter, self.transport
        self.thread = threading.current_thread()
        observers = adapter.processor.observers
        with adapter.stop_on_signals(), adapter.processor.context() as context:
            policy = Policy(context, transport, adapter.max_deliveries, adapter.retry_delay)
            backoff = Backoff(transport.first_reconnect_delay, adapter.max_reconnect_delay)
            if observers:
                observers.worker_started(adapter)
            try:
                while not adapter.stop_requested:
                    try:
                        transport.connect()
                        if backoff.failures and observers:
                            observers.connection_restored(transport.where())
                        backoff.reset()
                        adapter._set_ready()
                        if adapter.concurrency > 1:
                            self._consumer = ConcurrentConsumer(self, policy)
                            self._consumer.run()
                        else:
                            self._consume(policy)
                        break
                    except Exception as exc:
                        if exc is self._stop_failure or transport.fault(exc) is Fault.FATAL:
                            raise
                        transport.close()
                        if adapter.stop_requested:
                            break
                        if adapter.stop_event.wait(self._lost_connection(exc, backoff)):
                            break
            finally:
                if observers:
                    observers.worker_stopping(adapter)
                transport.close()
                if self._executor is not None:
                    context.executor = None
                    self._executor.shutdown(wait=False, cancel_futures=True)
        logger.info("stopped: %s", transport.where())

    def own_executor(self, size: int) -> concurrent.futures.Executor:
        """A pool of ``size`` threads for the run's synchronous work, shut down after it."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                size, thread_name_prefix="missive-sync"
            )
        return self._executor

    def polled(self, count: int) -> None:
        """Tell the observers a receive returned ``count`` messages and, when due, the
        broker's backlog. The caller checks that observers exist."""
        observers = self.adapter.processor.observers
        observers.polled(count)
        now = time.monotonic()
        if now >= self._backlog_due:
            self._backlog_due = now + self.adapter.backlog_interval
            depth = self.transport.backlog()
            if depth is not None:
                observers.backlog(depth)

    def wake(self) -> None:
        """End a receive that is waiting, after a stop was requested. Thread-safe."""
        self.transport.wake(from_signal=threading.current_thread() is self.thread)
        consumer = self._consumer
        if consumer is not None:
            consumer.wake()

    def _lost_connection(self, exc: Exception, backoff: Backoff) -> float:
        """Log a lost connection, tell the observers; return the wait before reconnecting."""
        transport = self.transport
        delay = backoff.next()
        logger.warning(
            "%s: connection to %s lost or refused (%s); reconnecting in %.3g s (attempt %d)%s",
            transport.where(),
            transport.broker_name,
            transport.describe(exc),
            delay,
            backoff.failures,
            transport.loss_note,
        )
        observers = self.adapter.processor.observers
        if observers:
            observers.connection_lost(transport.where(), exc, delay)
        return delay

    def _consume(self, policy: Policy[M]) -> None:
        """Receive and settle until a stop or the end of input."""
        adapter, transport = self.adapter, self.transport
        cls = adapter.message_cls
        observers = adapter.processor.observers
        handle, settled = policy.handle, policy.settled
        process = policy.context._process
        plain_first = policy.first_delivery_is_plain()
        stopping = adapter.stop_event.is_set
        receive = transport.receive
        size, timeout, limit = adapter.batch_size, adapter.poll_timeout, transport.ack_limit
        acks: list[Any] = []
        # Dead letters are stored a batch at a time, just before their acks (deferred).
        dead: list[tuple[Any, M, int | None]] = []
        context = policy.context
        deferring = (
            policy.on_failure is Verdict.RETRY
            and not transport.stop_on_loss
            and context.processor.dlq is not None
        )
        context.deferred_dead_letters = [] if deferring else None
        send = self._send
        while True:
            if acks:
                send(policy, acks, dead)
            if stopping():
                self._stop(policy, None, 0)
                return
            batch = receive(size, timeout)
            if observers:
                self.polled(len(batch.bodies))
            bodies, ids, attributes = batch.bodies, batch.ids, batch.attributes
            counts, handles, problems = batch.counts, batch.handles, batch.problems
            for i in range(len(bodies)):
                if stopping():
                    if acks:
                        send(policy, acks, dead)
                    self._stop(policy, batch, i)
                    return
                # The body of _settle, inlined: this is the hot path.
                message_id = ids[i]
                message = cls(bodies[i], message_id, attributes[i])
                count = counts[i]
                if observers:
                    observers.message_received(message, count)
                if count == 1 and plain_first and not problems:
                    # Policy.handle's decision for a plain first delivery, inlined: the
                    # hot path (the call would cost more than the rest of this loop).
                    try:
                        hctx = process(message)
                    except (HandlingError, DLQWriteError) as exc:
                        verdict: Any = exc
                    else:
                        outcome = hctx.outcome
                        if outcome is _ACKED:
                            verdict = _ACK
                        elif outcome is _DEAD:
                            verdict = _DEAD_LETTERED
                        else:  # NACKED or RETRY
                            verdict = settled(hctx, count)
                else:
                    verdict = handle(
                        message,
                        count,
                        problems.get(i) if problems else None,
                        message_id is not None,
                    )
                if verdict is _ACK or verdict is _DEAD_LETTERED:
                    acked = True  # told now; a deferred dead letter's, once stored
                    if verdict is _DEAD_LETTERED:
                        transport.dead_lettered(handles[i])
                        if deferring:
                            dead.append((handles[i], message, count))
                            acked = False
                    acks.append(handles[i])
                    if count != 1 and batch.suspect(i):
                        # A redelivery may be the neighbour of a message that crashed the
                        # worker: settle it now, so the next crash does not bring it back.
                        send(policy, acks, dead)
                        transport.flush()
                    elif len(acks) >= limit:
                        send(policy, acks, dead)
                    if observers and acked:
                        observers.acked(message)
                else:
                    if acks:  # settle in delivery order: the earlier rows first
                        send(policy, acks, dead)
                    self.give_back(policy, message, handles[i], verdict, count)
            if batch.ended:
                if acks:
                    send(policy, acks, dead)
                transport.flush()
                return

    def _settle(self, policy: Policy[M], batch: Batch, i: int) -> None:
        """Handle row ``i`` of ``batch`` and settle it at once (``_consume`` inlines this)."""
        transport, observers = self.transport, self.adapter.processor.observers
        message_id = batch.ids[i]
        message = self.adapter.message_cls(batch.bodies[i], message_id, batch.attributes[i])
        count = batch.counts[i]
        if observers:
            observers.message_received(message, count)
        problems = batch.problems
        verdict = policy.handle(
            message, count, problems.get(i) if problems else None, message_id is not None
        )
        if verdict is _ACK or verdict is _DEAD_LETTERED:
            if verdict is _DEAD_LETTERED:
                transport.dead_lettered(batch.handles[i])
            transport.ack([batch.handles[i]])
            if observers:
                observers.acked(message)
        else:
            self.give_back(policy, message, batch.handles[i], verdict, count)

    def _send(self, policy: Policy[M], acks: list[Any], dead: list[Any]) -> None:
        """Ack ``acks`` and clear it; first store the dead letters deferred among them
        (``dead``: their rows' handle, message and count), in one write."""
        if not dead:
            self.transport.ack(acks)
            acks.clear()
            return
        try:
            store_deferred(policy.context)
        except UnstoredError as failure:
            self._unstored(policy, acks, dead, failure)
        else:
            self.transport.ack(acks)
            observers = self.adapter.processor.observers
            if observers:
                for _, message, _ in dead:
                    observers.acked(message)
        acks.clear()
        dead.clear()

    def _unstored(
        self, policy: Policy[M], acks: list[Any], dead: list[Any], failure: UnstoredError
    ) -> None:
        """Ack the rows of ``acks`` handled, and give back, in delivery order, those
        whose dead letters were not stored, as a failed DLQ write is."""
        rows = {handle: (message, count) for handle, message, count in dead}
        reasons = {message.message_id: reason for message, reason in failure.letters}
        run: list[Any] = []
        for handle in acks:
            if handle not in rows:
                run.append(handle)
                continue
            if run:
                self.transport.ack(run)
                run = []
            message, count = rows[handle]
            reason = reasons.get(message.message_id, "dead letter not stored")
            error = DLQWriteError(message.message_id, reason, failure.error)
            self.give_back(policy, message, handle, error, count)
        if run:
            self.transport.ack(run)

    def give_back(
        self,
        policy: Policy[M],
        message: M,
        handle: Any,
        verdict: Verdict | Requeue | RetryLater | HandlingError | DLQWriteError,
        count: int | None,
    ) -> None:
        """Settle a row that was not acked: requeue it, hand it to ``retry_later``, or
        (neither handled nor stored) what :meth:`_failed` says."""
        observers = self.adapter.processor.observers
        if verdict is _REQUEUE or isinstance(verdict, Requeue):
            # A Requeue's delay is the one the DLQ's count or the handler gave.
            delay = verdict.delay if isinstance(verdict, Requeue) else policy.nack_delay(count)
            self.transport.requeue(handle, delay)
            if observers:
                observers.requeued(message, delay)
        elif isinstance(verdict, RetryLater):
            self.transport.retry_later(handle, message, verdict.delay, verdict.state)
            if observers:
                observers.retried(message, verdict.delay)
        else:
            self._failed(policy, message, handle, verdict)

    def _failed(
        self,
        policy: Policy[M],
        message: M,
        handle: Any,
        error: Verdict | Requeue | RetryLater | HandlingError | DLQWriteError,
    ) -> None:
        """A message neither handled nor stored: requeue it, log it as lost, or stop."""
        assert isinstance(error, HandlingError | DLQWriteError)
        transport, observers = self.transport, self.adapter.processor.observers
        verdict = policy.on_failure
        if verdict is Verdict.RETRY:
            delay = self.adapter.retry_delay
            transport.requeue(handle, delay)
            if transport.stop_on_loss:  # it is back on the transport; the error stops run()
                if observers:
                    observers.requeued(message, delay)
                self._raise(error, handle)
            # The error's text is safe to log: the id, the reason's summary, what to do.
            note = transport.redelivery_note or f"Requeuing it in {delay:.1f} s."
            logger.error(
                "%s %s", error, note, extra={"message_id": message.message_id, "outcome": "failed"}
            )
            if observers:
                observers.requeued(message, delay)
        elif verdict is Verdict.LOST:
            channel = message.attributes.get("channel")
            logger.error(
                "message %r (%d bytes%s) was not handled and is lost, as %s: %s",
                message.message_id,
                len(message.raw_data),
                "" if channel is None else f", channel {channel}",
                transport.cannot_redeliver,
                error,
                extra={"message_id": message.message_id, "outcome": "lost"},
            )
            if observers:
                observers.lost(message, error)
        else:
            self._raise(error, handle)

    def _raise(self, error: HandlingError | DLQWriteError, handle: Any) -> NoReturn:
        """Stop ``run()`` with ``error``, noting where its row is in the input."""
        where = self.transport.locate(handle)
        if where is not None:
            error.add_note(f"({where})")
        self._stop_failure = error
        raise error

    def _stop(self, policy: Policy[M], batch: Batch | None, start: int) -> None:
        """The stop sequence: hand back or handle what was received, drain, flush."""
        policy.context.deferred_dead_letters = None  # from here on, stored at once
        transport = self.transport
        if batch is not None and start < len(batch):
            if transport.capabilities & Capability.HAND_BACK:
                transport.hand_back(batch, start)
                observers = self.adapter.processor.observers
                if observers:
                    observers.handed_back(len(batch) - start)
                batch = None
            elif transport.drain_timeout is None:
                for i in range(start, len(batch)):
                    self._settle(policy, batch, i)
                batch = None
        else:
            batch = None
        if transport.drain_timeout is not None:
            self._drain(policy, transport.drain_timeout, batch, start)
        transport.flush()

    def _drain(
        self, policy: Policy[M], drain_timeout: float, batch: Batch | None, start: int
    ) -> None:
        """Handle what the transport still sends after :meth:`Transport.begin_drain`.

        The rows ``start:`` of ``batch`` (received, not started) come first, under the
        same deadline as what the transport sends afterwards.
        """
        transport = self.transport
        transport.begin_drain()
        deadline = time.monotonic() + drain_timeout
        reason = (
            f"the adapter stopped before handling it (drain_timeout={drain_timeout} s "
            f"passed); {transport.cannot_redeliver}"
        )
        size, handled = self.adapter.batch_size, 0
        try:
            while True:
                late = False
                if batch is None:
                    left = deadline - time.monotonic()
                    late = left <= 0
                    batch = (
                        transport.receive(1 << 30, 0.0) if late else transport.receive(size, left)
                    )
                    start = 0
                for i in range(start, len(batch)):
                    if time.monotonic() < deadline:
                        self._settle(policy, batch, i)
                        handled += 1
                    else:
                        self._dead_letter_unstarted(policy, batch, i, reason)
                if batch.ended:
                    logger.info("handled %d messages received before the stop", handled)
                    return
                if late:
                    break
                batch = None
        except Exception as exc:
            if transport.fault(exc) is Fault.FATAL:
                raise
            logger.warning("connection failed while stopping: %s", transport.describe(exc))
            return
        logger.warning(
            "stopped after drain_timeout=%s s with the subscription still open; messages "
            "%s sends after this point are not received",
            drain_timeout,
            transport.broker_name,
        )

    def _dead_letter_unstarted(self, policy: Policy[M], batch: Batch, i: int, reason: str) -> None:
        observers = self.adapter.processor.observers
        message = self.adapter.message_cls(batch.bodies[i], batch.ids[i], batch.attributes[i])
        if observers:
            observers.message_received(message, batch.counts[i])
        verdict = policy.dead_letter(message, reason)
        if verdict is _DEAD_LETTERED:
            self.transport.dead_lettered(batch.handles[i])
            self.transport.ack([batch.handles[i]])
            if observers:
                observers.acked(message)
        else:
            self._failed(policy, message, batch.handles[i], verdict)
