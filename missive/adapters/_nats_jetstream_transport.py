"""The JetStream transport: pull requests on a durable consumer, per-message acks.

Private: :class:`~missive.adapters.nats.NATSJetStreamAdapter` makes one per run. The
connection lives on the transport's event loop (see ``_nats_common``); the delivery
loop's thread sends pull requests, acks and naks through it, and takes the messages
a subscription callback queued. One pull request is out at a time, for at most the
rows the loop asked for, so that no more than that is held; a message is queued the
moment it arrives (no waiting for a whole batch).

While a message is held unsettled (queued, handled, or its ack owed), a task on the
event loop sends it an in-progress ack (``+WPI``) every ``in_progress_interval``
seconds, so that JetStream does not redeliver it after ``ack_wait`` to another
consumer while a long handler still runs. The delivery loop's thread may be inside
that handler, so the keeping must run on the event loop, not in a loop hook.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from missive.adapters._nats_common import NATSTransportBase, round_trip
from missive.adapters._nats_consumer import (
    ConsumerGoneError,
    ConsumerMisconfiguredError,
    ensure_consumer,
    inbox_callback,
    keep_in_progress,
    pull_request,
)
from missive.runtime.transport import Batch, Capability, Fault

if TYPE_CHECKING:
    from missive.adapters._nats_jetstream import NATSJetStreamAdapter

__all__ = ["JetStreamTransport"]

logger = logging.getLogger("missive.adapters.nats")

_CAPABILITIES = Capability.REDELIVERY | Capability.DELIVERY_COUNTS | Capability.DELAYED_REQUEUE
_CAPABILITIES |= Capability.HAND_BACK | Capability.ORDERED | Capability.PERSISTENCE
_CAPABILITIES |= Capability.CONSUMER_GROUPS | Capability.PATTERNS
#: The shortest life of a pull request on the server, in seconds.
MIN_EXPIRES = 0.05
_ACK = b"+ACK"
_TERM = b"+TERM"


class _PullEnded:
    """Queued by the callback when the server ends a pull request short."""


_PULL_ENDED = _PullEnded()


class JetStreamTransport(NATSTransportBase):
    """One connection pulling from one durable consumer."""

    capabilities: ClassVar[Capability] = _CAPABILITIES
    loss_note: ClassVar[str] = "; unacked messages are delivered again after ack_wait"

    def __init__(self, adapter: NATSJetStreamAdapter[Any]) -> None:
        super().__init__(adapter.url, adapter.connection_name)
        self.adapter = adapter
        self.stream, self.durable = adapter.stream, adapter.durable
        self.ack_limit = adapter.batch_size
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}"
        # A pull request lives as long as one receive waits: a worker busy in a long
        # handler then holds no open request that would catch messages (redeliveries
        # too) which an idle competing worker could take.
        self._expires = max(adapter.poll_timeout, MIN_EXPIRES)
        self._inbox = ""
        self._sub: Any = None
        self._wanted = 0  # messages the pull request out may still bring (loop thread)
        self._pull_deadline = 0.0
        # Reply subjects of rows settled, acks not sent yet: kept across reconnections,
        # since a JetStream ack subject is valid on any connection.
        self._owed: list[str] = []
        self._dead: set[str] = set()  # owed +TERM rather than +ACK: dead-lettered
        self._lost = False
        # Reply subject -> when it last told the server it is in progress (event loop only).
        self._unsettled: dict[str, float] = {}
        self.ack_wait = adapter.ack_wait  # the consumer's, once connected

    # -- connect ------------------------------------------------------------------------

    def connect(self) -> None:
        self._open()
        self._lost, self._wanted = False, 0
        self._run(self._setup())
        logger.info(
            "pulling from consumer %r of stream %r at %s", self.durable, self.stream, self.where()
        )

    async def _setup(self) -> None:
        nc = self._nc
        assert nc is not None
        adapter = self.adapter
        info = await ensure_consumer(
            nc.jsm(), self.stream, self.durable, adapter.filter_subject, adapter.bind,
            adapter.ack_wait,
        )
        self.ack_wait = info.config.ack_wait or adapter.ack_wait
        self._unsettled = unsettled = dict[str, float]()
        on_message = inbox_callback(self._queue, unsettled, _PULL_ENDED)
        self._inbox = nc.new_inbox()
        self._sub = await nc.subscribe(self._inbox, cb=on_message)
        await round_trip(nc)
        interval = self.adapter.in_progress_interval
        if interval is None:
            interval = self.ack_wait / 3
        if interval > 0:
            asyncio.get_running_loop().create_task(keep_in_progress(nc, unsettled, interval))

    # -- receive ------------------------------------------------------------------------

    def receive(self, max_messages: int, timeout: float) -> Batch:
        batch = self._batch
        batch.clear()
        now = time.monotonic()
        if self._wanted and now > self._pull_deadline:
            self._wanted = 0  # the request's end never came (a lost status): ask again
        pull = 0 if self._wanted else max_messages
        if pull or self._owed:
            owed, self._owed = self._owed, []
            self._run(self._send(owed, pull))
            if pull:
                self._wanted, self._pull_deadline = pull, now + self._expires + 1.0
        self.take(max_messages, timeout, self._add)
        return batch

    async def _send(self, owed: list[str], pull: int) -> None:
        nc = self._nc
        assert nc is not None
        publish, unsettled = nc.publish, self._unsettled
        try:
            dead = self._dead
            for reply in owed:
                if dead and reply in dead:
                    await publish(reply, _TERM)  # stored in the DLQ: no more deliveries
                    dead.discard(reply)
                else:
                    await publish(reply, _ACK)
                unsettled.pop(reply, None)
        except BaseException:
            self._owed[:0] = owed  # sent again by the next connection
            raise
        if pull:
            await publish(self._next, pull_request(pull, self._expires), reply=self._inbox)

    def _add(self, item: Any) -> bool:
        """Make a row of a queued message; note the end of a pull request."""
        if item is _PULL_ENDED:
            self._wanted = 0
            return False
        msg: Msg = item
        self._wanted = max(0, self._wanted - 1)
        try:
            metadata = msg.metadata
        except nats.errors.NotJSMessageError:
            logger.warning("%s: ignored a message that is not from JetStream", self.where())
            return False
        headers = msg.headers or {}
        publisher_id = headers.get("Nats-Msg-Id")
        sequence = metadata.sequence.stream
        message_id = (publisher_id or f"{metadata.stream}:{sequence}").encode()
        count = metadata.num_delivered
        attributes = {
            "subject": msg.subject,
            "stream": metadata.stream,
            "sequence": sequence,
            "consumer": metadata.consumer,
            "headers": headers,
            "delivery_count": count,
            "publisher_id": bool(publisher_id),
        }
        self._batch.add(msg.data, message_id, attributes, msg.reply, count)
        return True

    # -- settle -------------------------------------------------------------------------

    def ack(self, handles: list[Any]) -> None:
        """Owe ``+ACK`` for these: sent with the next pull, by flush() or close()."""
        self._owed.extend(handles)

    def dead_lettered(self, handle: Any) -> None:
        """Owe ``+TERM`` rather than ``+ACK`` for this one, when its ack comes."""
        self._dead.add(handle)

    def ack_out_of_order(self, handles: list[Any]) -> bool:
        """JetStream acks each message by its own subject: owe them as any other."""
        self._owed.extend(handles)
        return True

    def flush(self) -> None:
        if self._owed and self._thread is not None:
            owed, self._owed = self._owed, []
            self._run(self._send(owed, 0))

    def requeue(self, handle: Any, delay: float = 0.0) -> None:
        """``-NAK``, with a delay when there is one: JetStream redelivers it after that."""
        self._run(self._nak([handle], delay))

    async def _nak(self, replies: list[str], delay: float) -> None:
        nc = self._nc
        assert nc is not None
        body = b"-NAK" if delay <= 0 else b'-NAK {"delay": %d}' % int(delay * 1e9)
        for reply in replies:
            await nc.publish(reply, body)
            self._unsettled.pop(reply, None)

    def hand_back(self, batch: Batch, start: int) -> None:
        """Stop pulling, then nak the rows not started and those still queued."""
        self._run(self._hand_back(list(batch.handles[start:])))

    async def _hand_back(self, replies: list[str]) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.drain()  # unsubscribe; what the server already sent is queued
        queue = self._queue
        while not queue.empty():
            item = queue.get_nowait()
            if isinstance(item, Msg) and item.reply:
                replies.append(item.reply)
        self._wanted = 0
        await self._nak(replies, 0.0)
        if self._owed:
            owed, self._owed = self._owed, []
            await self._send(owed, 0)
        assert self._nc is not None
        await round_trip(self._nc)

    # -- close and faults ---------------------------------------------------------------

    async def _before_close(self, nc: Any) -> None:
        """On a close with the connection up: give back what was pulled and never taken
        (a pull may have brought more after the last receive), and send the owed acks."""
        if not self._lost:
            await self._hand_back([])

    def close(self) -> None:
        connected = self._thread is not None
        super().close()
        if connected and self._lost:
            return  # the next connection sends the owed acks
        if self._owed:
            logger.warning(
                "stopped with %d acks unsent (connection lost); JetStream delivers those "
                "messages again after ack_wait",
                len(self._owed),
            )
            self._owed.clear()

    def fault(self, exc: BaseException) -> Fault:
        if isinstance(exc, ConsumerMisconfiguredError):
            return Fault.FATAL
        if isinstance(exc, nats.js.errors.NotFoundError):
            missing = "stream or consumer" if self.adapter.bind else "stream"
            exc.add_note(f"(JetStream {missing} not found: {self.where()})")
            return Fault.FATAL
        fault = Fault.RECONNECT if isinstance(exc, ConsumerGoneError) else super().fault(exc)
        self._lost = fault is Fault.RECONNECT
        return fault

    def source(self) -> str:
        return str(self.stream)

    def where(self) -> str:
        return f"stream {self.stream!r} consumer {self.durable!r} at {super().where()}"
