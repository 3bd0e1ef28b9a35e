"""The MQTT transport, which :class:`~missive.adapters.mqtt.MQTTAdapter` makes per run.

Threads: every call into paho (connect, receive, ack, close) runs on the delivery
loop's thread, which drives the socket itself through a :class:`SocketPump`: its
callbacks append messages to a list that ``receive`` takes them from. Between calls,
the pump's keeper thread answers pings. ``wake`` ends a waiting receive from any
thread, signal handlers included.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, ClassVar

import paho.mqtt.client as mqtt

from missive.adapters._mqtt_io import SocketPump, queue_writes
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
    from collections.abc import Callable

    from missive.adapters.mqtt import MQTTAdapter

__all__: list[str] = []

logger = logging.getLogger("missive.adapters.mqtt")

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
    system: ClassVar[str] = "mqtt"
    broker_name: ClassVar[str] = "the MQTT broker"
    loss_note: ClassVar[str] = (
        "; unacknowledged messages stay in the session and come again on reconnection"
    )
    first_reconnect_delay: ClassVar[float] = 0.1
    ack_limit = 50

    def __init__(self, adapter: MQTTAdapter[Any]) -> None:
        self._adapter = adapter
        self._v5 = adapter.protocol == "5"
        self._client_id = adapter.client_id
        self._batch = Batch()
        self._pending: list[tuple[Any, ...]] = []  # rows read, not yet received
        self._pump: SocketPump | None = None
        self._lost: BaseException | None = None  # set by on_disconnect
        self._closing = False
        self._woken = False
        self._unflushed = False  # PUBACKs were sent since the last round trip

    # -- connecting -------------------------------------------------------------------

    def connect(self) -> None:
        adapter = self._adapter
        self._pending = pending = []
        self._lost, self._closing, self._unflushed = None, False, False
        state: dict[str, Any] = {}
        client = new_client(adapter)
        row = row_maker(adapter)

        def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            # A row at once: paho's message dies young, which spares the collector.
            pending.append(row(message))

        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            state["connack"] = rc
            state["session_present"] = flags.session_present

        def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, codes: Any, p: Any) -> None:
            state["suback"] = codes

        def on_disconnect(client: mqtt.Client, userdata: Any, f: Any, rc: Any, p: Any) -> None:
            if not self._closing and self._lost is None:
                self._lost = connection_lost(rc, self._client_id)

        def on_unsubscribe(client: mqtt.Client, userdata: Any, mid: int, c: Any, p: Any) -> None:
            state["unsuback"] = True

        client.on_message, client.on_connect = on_message, on_connect
        client.on_subscribe, client.on_disconnect = on_subscribe, on_disconnect
        client.on_unsubscribe = on_unsubscribe
        queue_writes(client)
        self._state = state
        self._pump = pump = SocketPump(client, adapter.keepalive)
        with pump.lock:
            client.connect(
                adapter.host,
                adapter.port,
                adapter.keepalive,
                clean_start=False if self._v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                properties=connect_properties(adapter) if self._v5 else None,
            )
            with contextlib.suppress(OSError, AttributeError):  # no Nagle delay on acks
                client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
            self._wait(lambda: "connack" in state, "CONNACK")
            if (code := state["connack"]).is_failure:
                raise refused(code, f"refused the connection of client {self._client_id!r}")
            adapter._session_found(bool(state["session_present"]))
            # Even into a session that has them: the topics may have changed since.
            client.subscribe(subscriptions(adapter, self._v5))
            self._wait(lambda: "suback" in state, "SUBACK")
        for topic, code in zip(adapter.subscriptions, state["suback"], strict=False):
            if code.is_failure or code.value < 1:
                raise refused(code, f"refused the QoS 1 subscription to {topic!r}")
        pump.start_keeper()
        logger.info("consuming %s", self.where())

    def _wait(self, answered: Callable[[], bool], packet: str) -> None:
        """Turn the pump until ``packet`` came, the connection failed, or a stop."""
        pump = self._pump
        assert pump is not None
        timeout = self._adapter.connect_timeout
        deadline = time.monotonic() + timeout
        while not answered():
            if self._lost is not None:
                raise self._lost
            if self._woken:  # a stop: the loop closes this connection and returns
                raise ConnectionLostError(f"stopped while waiting for the {packet}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConnectionLostError(f"no {packet} from the broker within {timeout} s")
            pump.turn(left)

    # -- consuming --------------------------------------------------------------------

    def receive(self, max_messages: int, timeout: float) -> Batch:
        batch = self._batch
        batch.clear()
        pump, pending = self._pump, self._pending
        assert pump is not None, "receive() before connect()"
        with pump.lock:
            if self._lost is None and not pending and not self._woken:
                pump.turn(timeout, pending, max_messages)
            if self._lost is not None:
                # These rows came on a failed connection and cannot be acked any more;
                # the session sends them again on the next connection.
                raise self._lost
            if not pending:
                return batch
            taken = pending[:max_messages]
            del pending[:max_messages]
        add = batch.add
        for row in taken:
            add(*row)
        return batch

    def ack(self, handles: list[Any]) -> None:
        """PUBACK each packet id, in order, written to the socket at once."""
        pump = self._pump
        assert pump is not None, "ack() before connect()"
        with pump.lock:
            if self._lost is not None:
                raise self._lost  # they come again on the next connection
            ack = pump.client.ack
            for mid in handles:
                if mid is not None:
                    ack(mid, 1)
                    self._unflushed = True
            pump.write()

    def flush(self) -> None:
        """Write every PUBACK paho still holds (a full socket buffer): from the
        socket's buffer they reach the broker even if this process dies now."""
        pump = self._pump
        if pump is None:
            return
        with pump.lock:
            if not pump.write_all(self._adapter.connect_timeout, lambda: self._lost is not None):
                raise ConnectionLostError("the acks could not be written to the socket")

    def _settle(self, pump: SocketPump) -> None:
        """Wait until the broker has processed every PUBACK sent, before disconnecting.

        A broker that sees this client id connect again (a restart) drops what it had
        not read yet from the old connection, and nothing acknowledges a PUBACK. So a
        round trip ends the connection: an UNSUBSCRIBE from a filter never subscribed
        to, whose UNSUBACK comes once the packets before it were processed.
        """
        if not self._unflushed or self._lost is not None:
            return
        self._unflushed = False
        self._state.pop("unsuback", None)
        pump.client.unsubscribe(self._adapter._flush_filter)
        deadline = time.monotonic() + self._adapter.connect_timeout
        while "unsuback" not in self._state and self._lost is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            pump.turn(left)

    def hand_back(self, batch: Batch, start: int) -> None:
        """Nothing to send: unacknowledged, they stay in the session, and come again
        (DUP set) when this client id reconnects."""

    def wake(self, from_signal: bool) -> None:
        self._woken = True
        pump = self._pump
        if pump is not None:
            pump.wake()  # one os.write: safe in a signal handler

    def close(self) -> None:
        pump, self._pump = self._pump, None
        if pump is None:
            return
        pump.stop_keeper()  # from here this thread alone drives paho
        client = pump.client
        with contextlib.suppress(Exception):
            self._settle(pump)  # the PUBACKs are processed before the DISCONNECT
        self._closing = True
        with contextlib.suppress(Exception):
            if client.is_connected():
                # A normal DISCONNECT: the session stays, with the expiry set when
                # connecting, and with it every message not acknowledged.
                client.disconnect()
                pump.write()
        pump.close()

    # -- texts and counts ---------------------------------------------------------------

    def fault(self, exc: BaseException) -> Fault:
        return self._adapter._fault(exc)

    def where(self) -> str:
        return self._adapter._where

    def source(self) -> str:
        return ", ".join(self._adapter.topics)

    def count_key(self, message: Message, stable_id: bool) -> bytes | None:
        return message.message_id if stable_id else content_key(message)

    def counted(self, message: Message, stable_id: bool, attempts: int) -> None:
        if attempts == 2 and not stable_id:  # once per message: at its first redelivery
            warn_counted_by_content(message, self._adapter.id_property)
