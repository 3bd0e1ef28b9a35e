"""The core NATS transport: subscriptions (maybe in a queue group) on one connection.

Private: :class:`~missive.adapters.nats.NATSAdapter` makes one per run. Core NATS
keeps nothing and has no acks: a message goes to whoever is subscribed when it is
published, once. Like Redis Pub/Sub, a nack cannot be redelivered (the loop
dead-letters it), and on a stop the subscriptions are drained for ``drain_timeout``.
"""

from __future__ import annotations

import logging
from itertools import repeat
from typing import TYPE_CHECKING, Any, ClassVar

from nats.aio.msg import Msg

from missive.adapters._nats_common import NATSTransportBase, round_trip
from missive.runtime.transport import Batch, Capability

if TYPE_CHECKING:
    from missive.adapters._nats_core import NATSAdapter

__all__ = ["CoreTransport", "QueueGroupTransport"]

logger = logging.getLogger("missive.adapters.nats")

_END = object()  # queued once every subscription is drained: nothing more comes


class CoreTransport(NATSTransportBase):
    """Subscriptions to subjects (wildcards allowed); every subscriber gets every message."""

    capabilities: ClassVar[Capability] = Capability.PATTERNS
    cannot_redeliver: ClassVar[str] = "core NATS cannot redeliver a message"
    loss_note: ClassVar[str] = "; messages published meanwhile are missed (core NATS keeps none)"
    ack_limit = 1 << 30  # acks are no-ops here: no call per message

    def __init__(self, adapter: NATSAdapter[Any]) -> None:
        super().__init__(adapter.url, adapter.connection_name)
        self.adapter = adapter
        self.drain_timeout = adapter.drain_timeout
        self._subs: list[Any] = []
        self._queue_group = adapter.queue or ""
        group = f" in queue group {adapter.queue!r}" if adapter.queue else ""
        self._what = f"subjects {', '.join(adapter.subjects)}{group}"
        self._ended = False

    def connect(self) -> None:
        """Connect and subscribe; once ready, nothing published is missed."""
        self._open()
        self._ended = False
        self._run(self._subscribe())
        logger.info("subscribed to %s at %s", self._what, super().where())

    async def _subscribe(self) -> None:
        nc, queue = self._nc, self._queue
        assert nc is not None
        put = queue.put

        async def on_message(msg: Msg) -> None:
            put(msg)

        self._subs = [
            await nc.subscribe(subject, queue=self._queue_group, cb=on_message)
            for subject in self.adapter.subjects
        ]
        await round_trip(nc)  # the server has the subscriptions

    def receive(self, max_messages: int, timeout: float) -> Batch:
        batch = self._batch
        batch.clear()
        add_body, add_attributes = batch.bodies.append, batch.attributes.append

        def add(item: Any) -> bool:
            if item is _END:
                batch.ended = self._ended = True
                return False
            msg: Msg = item
            attributes: dict[str, Any] = {"subject": msg.subject}
            if msg.headers:
                attributes["headers"] = msg.headers
            if msg.reply:
                attributes["reply"] = msg.reply
            add_body(msg.data)
            add_attributes(attributes)
            return True

        if self._ended:  # drained: nothing more will come
            batch.ended = True
            return batch
        n = self.take(max_messages, timeout, add)
        # Every row has a generated id, count 1 and no handle: filled per batch.
        batch.ids.extend(repeat(None, n))
        batch.counts.extend(repeat(1, n))
        batch.handles.extend(repeat(None, n))
        return batch

    def begin_drain(self) -> None:
        """Unsubscribe; what the server sent before is still queued, then the end."""
        if self._thread is not None:
            self._thread.submit(self._drain())

    async def _drain(self) -> None:
        subs, self._subs = self._subs, []
        try:
            for sub in subs:
                await sub.drain()  # unsubscribe, round trip, hand over what came
        except Exception as exc:
            self._queue.put(exc)
            return
        self._queue.put(_END)

    def where(self) -> str:
        return f"{self._what} at {super().where()}"

    def source(self) -> str:
        return ", ".join(self.adapter.subjects)


class QueueGroupTransport(CoreTransport):
    """The same in a queue group: each message goes to one member of the group."""

    capabilities: ClassVar[Capability] = Capability.PATTERNS | Capability.CONSUMER_GROUPS
