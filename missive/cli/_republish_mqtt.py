"""Publishing dead letters back to an MQTT broker, each confirmed (``replay --to-broker``).

A letter is published at QoS 1 to the topic it was received on (the message's own
topic, as the adapter stored it: never the filter subscribed to, which may be a
shared subscription's ``$share/<group>/...`` or hold wildcards), not retained, with
its MQTT 5 user properties in their order (the publisher's id among them) less any
earlier ``x-missive-replays``, then ``x-missive-replays``, and its content type,
response topic and correlation data when stored. It is confirmed by the broker's
PUBACK; a PUBACK whose reason code is a failure keeps it, and so does "no matching
subscribers" (0x10): the broker dropped it, as no session subscribes to its topic.

One MQTT 5 connection with a clean session and a client id of its own. Imported only
by a replay to an ``mqtt://`` URL; paho-mqtt is imported here, so a missing extra is
reported then.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import ssl
import threading
from typing import Any

from missive.cli._common import CLIError, redact
from missive.cli._replay_loop import RefusedError
from missive.cli._republish import REPLAYS
from missive.dlq import DeadLetter
from missive.errors import MissingExtraError

try:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode
except ImportError as _exc:
    raise MissingExtraError("mqtt", "missive dlq replay --to-broker mqtt://") from _exc

from missive.adapters._mqtt_session import parse_url

__all__ = ["MQTTPublisher", "connect", "properties"]

#: Seconds to wait for the CONNACK, then for each PUBACK.
TIMEOUT = 10.0
_NO_SUBSCRIBERS = 0x10


def connect(url: str, args: argparse.Namespace) -> MQTTPublisher:
    """A publisher on the MQTT broker at ``url``.

    :raises CLIError: if it cannot connect.
    """
    return MQTTPublisher(url)


class MQTTPublisher:
    """Publishes at QoS 1 on one MQTT 5 connection, waiting for each PUBACK.

    :raises CLIError: if the URL is not an MQTT one, or the broker cannot be reached or
        refuses the connection.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            host, port, user, password, tls = parse_url(url)
        except ValueError as exc:
            raise CLIError(f"--broker-url {redact(url)!r}: {exc}") from None
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"missive-replay-{socket.gethostname()}-{os.getpid()}",
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        if tls:
            self.client.tls_set_context(ssl.create_default_context())
        self._connack: ReasonCode | None = None
        self._connected = threading.Event()
        # Each PUBACK's reason code by packet id, set before paho marks it published.
        self._acks: dict[int, ReasonCode] = {}
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        try:
            self.client.connect(host, port, keepalive=30, clean_start=True)
        except (OSError, ValueError) as exc:
            raise self._cannot(type(exc).__name__) from None
        self.client.loop_start()
        if not self._connected.wait(TIMEOUT):
            self.close()
            raise self._cannot(f"no CONNACK within {TIMEOUT:g} s")
        code = self._connack
        if code is None or code.is_failure:
            self.close()
            raise self._cannot(f"refused: {code.getName() if code else 'closed'}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, code: Any, props: Any) -> None:
        self._connack = code
        self._connected.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, code: Any, props: Any) -> None:
        self._acks[mid] = code

    def _cannot(self, why: str) -> CLIError:
        return CLIError(f"cannot connect to MQTT at {redact(self.url)!r} ({why}); nothing sent")

    def publish(self, record: DeadLetter, replays: int) -> None:
        """Publish ``record`` to its topic at QoS 1; return once the broker acked it."""
        topic = str(record.attributes["topic"])
        if topic.startswith("$share/") or "+" in topic or "#" in topic:
            raise RefusedError(f"{topic!r} is a topic filter, not a topic")
        info = self.client.publish(
            topic, record.message.raw_data, qos=1, properties=properties(record, replays)
        )
        try:
            info.wait_for_publish(TIMEOUT)
        except (RuntimeError, ValueError):
            raise self._lost() from None
        if not info.is_published():
            if not self.client.is_connected():
                raise self._lost()
            raise RefusedError(f"no PUBACK from the broker within {TIMEOUT:g} s")
        code = self._acks.pop(info.mid, None)
        if code is not None and code.is_failure:
            raise RefusedError(f"the broker refused it: {code.getName()} ({code.value:#04x})")
        if code is not None and code.value == _NO_SUBSCRIBERS:
            raise RefusedError(f"no subscriber: no session subscribes to topic {topic!r}")

    def _lost(self) -> CLIError:
        return CLIError(
            f"lost the connection to MQTT at {redact(self.url)!r}; the letters confirmed "
            "so far are removed: run the same command again for the others"
        )

    def close(self) -> None:
        """Disconnect and stop the network thread (quietly: it may be gone)."""
        with contextlib.suppress(OSError, ValueError):
            self.client.disconnect()
        self.client.loop_stop()


def properties(record: DeadLetter, replays: int) -> Properties:
    """The PUBLISH properties: the stored user properties, content type, response
    topic and correlation data, and the replay count."""
    attributes = record.attributes
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    pairs = [
        (str(pair[0]), str(pair[1]))
        for pair in attributes.get("user_properties") or ()
        if len(pair) == 2 and pair[0] != REPLAYS
    ]
    props.UserProperty = [*pairs, (REPLAYS, str(replays))]
    if attributes.get("content_type"):
        props.ContentType = str(attributes["content_type"])
    if attributes.get("response_topic"):
        props.ResponseTopic = str(attributes["response_topic"])
    correlation = attributes.get("correlation_data")
    if isinstance(correlation, bytes | str) and correlation:
        props.CorrelationData = (
            correlation if isinstance(correlation, bytes) else correlation.encode()
        )
    return props
