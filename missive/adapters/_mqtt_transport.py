"""The MQTT transport, which :class:`~missive.adapters.mqtt.MQTTAdapter` makes per run.

Threads: paho's network thread (``loop_start``) reads and writes the socket and runs
the callbacks, which only put messages (or the failure) on a queue. Everything else
(connect, receive, ack, close) runs on the delivery loop's thread; ``wake`` puts a
marker on the same queue from any thread. PUBACKs queued by ``client.ack`` are
written by the network thread in that order.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any, ClassVar

import paho.mqtt.client as mqtt

from missive.adapters._mqtt_session import (
    ConnectionLostError,
    connect_properties,
    connection_lost,
    content_key,
    new_client,
    refused,
    row_maker,
    subscriptions,
    warn_counted_by_content,
)
from missive.message import Message
from missive.runtime.transport import Batch, Capability, Fault, Transport

if TYPE_CHECKING:
    from missive.adapters.mqtt import MQTTAdapter

__all__: list[str] = []

logger = logging.getLogger("missive.adapters.mqtt")

_WAKE = object()  # put by wake(): ends a waiting receive, then skipped
_MESSAGE = mqtt.MQTTMessage
_CAPABILITIES = Capability.COUNT_IN_DLQ | Capability.HAND_BACK | Capability.ORDERED
_CAPABILITIES |= Capability.PERSISTENCE | Capability.CONSUMER_GROUPS | Capability.PATTERNS


class MQTTTransport(Transport):
    """One connection with a persistent session; QoS 1 subscriptions, manual PUBACKs."""

    capabilities: ClassVar[Capability] = _CAPABILITIES
    cannot_redeliver: ClassVar[str] = (
        "MQTT cannot redeliver a message on demand (it has no nack; only a reconnection "
        "brings unacknowledged messages back)"
    )
    # Neither handled nor stored: run() stops, the message stays in the session.
    stop_on_loss: ClassVar[bool] = True
    broker_name: ClassVar[str] = "the MQTT broker"
    loss_note: ClassVar[str] = (
        "; unacknowledged messages stay in the session and come again on reconnection"
    )
    first_reconnect_delay: ClassVar[float] = 0.1
    ack_limit = 10

    def __init__(self, adapter: MQTTAdapter[Any]) -> None:
        self._adapter = adapter
        self._v5 = adapter.protocol == "5"
        self._client_id = adapter.client_id
        self._batch = Batch()
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._client: mqtt.Client | None = None
        self._lost: BaseException | None = None  # set by the network thread
        self._closing = False
        self._answered: threading.Event | None = None  # set by a CONNACK, SUBACK or wake
        self._woken = False
        self._settled = threading.Event()  # set by the UNSUBACK that ends a flush
        self._unflushed = False  # PUBACKs were sent since the last flush
        self._row = row_maker(adapter)

    # -- connecting -------------------------------------------------------------------

    def connect(self) -> None:
        adapter = self._adapter
        queue: SimpleQueue[Any] = SimpleQueue()
        self._queue = queue
        self._lost, self._closing = None, False
        self._answered = answered = threading.Event()
        state: dict[str, Any] = {}
        self._unflushed = False
        client = new_client(adapter)
        put = queue.put

        def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            put(message)

        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            state["connack"] = rc
            state["session_present"] = flags.session_present
            answered.set()

        def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, codes: Any, p: Any) -> None:
            state["suback"] = codes
            answered.set()

        def on_disconnect(client: mqtt.Client, userdata: Any, f: Any, rc: Any, p: Any) -> None:
            if not self._closing:
                self._lost = lost = connection_lost(rc, self._client_id)
                put(lost)
            answered.set()
            self._settled.set()

        def on_unsubscribe(client: mqtt.Client, userdata: Any, mid: int, c: Any, p: Any) -> None:
            self._settled.set()

        client.on_message, client.on_connect = on_message, on_connect
        client.on_subscribe, client.on_disconnect = on_subscribe, on_disconnect
        client.on_unsubscribe = on_unsubscribe
        self._client = client
        client.connect(
            adapter.host,
            adapter.port,
            adapter.keepalive,
            clean_start=False if self._v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=connect_properties(adapter) if self._v5 else None,
        )
        with contextlib.suppress(OSError, AttributeError):  # no Nagle delay on the acks
            client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
        client.loop_start()
        self._wait(answered, "CONNACK")
        if (code := state["connack"]).is_failure:
            raise refused(code, f"refused the connection of client {self._client_id!r}")
        adapter._session_found(bool(state["session_present"]))
        # Even into a session that has them: the topics may have changed since.
        answered.clear()
        client.subscribe(subscriptions(adapter, self._v5))
        self._wait(answered, "SUBACK")
        for topic, code in zip(adapter.subscriptions, state["suback"], strict=False):
            if code.is_failure or code.value < 1:
                raise refused(code, f"refused the QoS 1 subscription to {topic!r}")
        logger.info("consuming %s", self.where())

    def _wait(self, answered: threading.Event, packet: str) -> None:
        """Wait for ``packet`` (its callback sets ``answered``), a failure, or a stop."""
        timeout = self._adapter.connect_timeout
        if not answered.wait(timeout):
            raise ConnectionLostError(f"no {packet} from the broker within {timeout} s")
        if self._lost is not None:
            raise self._lost
        if self._woken:  # a stop: the loop closes this connection and returns
            raise ConnectionLostError(f"stopped while waiting for the {packet}")

    # -- consuming --------------------------------------------------------------------

    def receive(self, max_messages: int, timeout: float) -> Batch:
        batch = self._batch
        batch.clear()
        if self._lost is not None:
            raise self._lost
        queue = self._queue
        try:
            item = queue.get(timeout=timeout) if timeout > 0 else queue.get_nowait()
        except Empty:
            return batch
        get, row, add, n = queue.get_nowait, self._row, batch.add, 0
        while True:
            if item.__class__ is _MESSAGE:
                add(*row(item))
                n += 1
                if n >= max_messages:
                    break
            elif item is not _WAKE:
                # The connection failed: these rows came on it and cannot be acked any
                # more; the session sends them again on the next connection.
                raise item
            try:
                item = get()
            except Empty:
                break
        return batch

    def ack(self, handles: list[Any]) -> None:
        """PUBACK each packet id, in order; paho's network thread writes them at once."""
        if self._lost is not None:
            raise self._lost  # they come again on the next connection
        client = self._client
        assert client is not None, "ack() before connect()"
        for mid in handles:
            if mid is not None:
                client.ack(mid, 1)
                self._unflushed = True

    def flush(self) -> None:
        """Wait until paho's network thread wrote every PUBACK queued so far: from the
        socket's buffer they reach the broker even if this process dies now."""
        client = self._client
        if client is None:
            return
        deadline = time.monotonic() + self._adapter.connect_timeout
        while client.want_write() and self._lost is None:
            if time.monotonic() > deadline:
                raise ConnectionLostError("the acks could not be written to the socket")
            time.sleep(0.0002)

    def _settle(self, client: mqtt.Client) -> None:
        """Wait until the broker has processed every PUBACK sent, before disconnecting.

        A broker that sees this client id connect again (a restart) drops what it had
        not read yet from the old connection, and nothing acknowledges a PUBACK. So a
        round trip ends the connection: an UNSUBSCRIBE from a filter never subscribed
        to, whose UNSUBACK comes once the packets before it were processed.
        """
        if not self._unflushed or self._lost is not None:
            return
        self._unflushed = False
        self._settled.clear()
        client.unsubscribe(self._adapter._flush_filter)
        self._settled.wait(self._adapter.connect_timeout)

    def hand_back(self, batch: Batch, start: int) -> None:
        """Nothing to send: unacknowledged, they stay in the session, and come again
        (DUP set) when this client id reconnects."""

    def wake(self, from_signal: bool) -> None:
        self._woken = True
        self._queue.put(_WAKE)  # SimpleQueue.put is reentrant: safe in a signal handler
        answered = self._answered
        if answered is not None and not from_signal:  # Event.set takes a lock
            answered.set()  # a connect waiting for its CONNACK or SUBACK returns

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            self._settle(client)  # the PUBACKs are processed before the DISCONNECT
        self._closing = True
        with contextlib.suppress(Exception):
            if client.is_connected():
                # A normal DISCONNECT: the session stays, with the expiry set when
                # connecting, and with it every message not acknowledged.
                client.disconnect()
        with contextlib.suppress(Exception):
            client.loop_stop()

    # -- texts and counts ---------------------------------------------------------------

    def fault(self, exc: BaseException) -> Fault:
        return self._adapter._fault(exc)

    def where(self) -> str:
        return self._adapter._where

    def count_key(self, message: Message, stable_id: bool) -> bytes | None:
        return message.message_id if stable_id else content_key(message)

    def counted(self, message: Message, stable_id: bool, attempts: int) -> None:
        if attempts == 2 and not stable_id:  # once per message: at its first redelivery
            warn_counted_by_content(message, self._adapter.id_property)
