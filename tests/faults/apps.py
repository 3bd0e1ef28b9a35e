"""The worker applications the fault-injection scenarios run in subprocesses.

``python -m missive run tests.faults.apps:rabbitmq_worker`` (or ``streams_worker``,
``nats_worker``, ``mqtt_worker``),
configured through environment variables set by the test (see ``workers.py``):

``FAULT_URL``, ``FAULT_TARGET`` (queue, stream or MQTT topic), ``FAULT_GROUP`` (the
Streams group, the NATS durable consumer, the MQTT shared-subscription group),
``FAULT_NAME`` (connection or client name, so the test can kill it server-side; for
MQTT the prefix of the client ids, see :func:`mqtt_worker`),
``FAULT_RECORD_DIR`` (where handled ids are recorded), ``FAULT_DLQ`` (the SQLite DLQ
file shared by every worker; or ``FAULT_DLQ_URL``, ``FAULT_DLQ_TABLE`` and
``FAULT_DLQ_APP`` for a PostgreSQL DLQ), ``FAULT_SLEEP`` (seconds each message takes),
``FAULT_MAX_DELIVERIES``, ``FAULT_PREFETCH`` (RabbitMQ), ``FAULT_BATCH`` (Streams,
NATS) and ``FAULT_CLAIM_MS`` (Streams); ``FAULT_CONCURRENCY`` (the adapter's
``concurrency``, left to its default when unset) and ``FAULT_ASYNC`` (when set, the handler is an
``async def`` that awaits ``asyncio.sleep``), for the modes of ``scenario.MODES``;
``FAULT_RETRY`` (the processor's :class:`missive.Retry`, as JSON keyword arguments) and
``FAULT_DOWN_UNTIL`` (epoch seconds until which the handler's "dependency" is down).

Each message is a JSON object ``{"n": 1, "do": "ok"}``; ``do`` says what the handler
does: ``ok`` handles it, ``raise`` raises (so it is dead-lettered, after its retries),
``exit`` kills the process with ``os._exit(1)`` (a poison message), ``once`` raises on
its first delivery only (not on a delayed retry), ``dependency`` raises
``ConnectionError`` until ``FAULT_DOWN_UNTIL``. Anything that is not such an object,
or a body over :data:`MAX_BODY`, makes the handler raise. A handled message's id is
appended to ``handled-<pid>.log`` and fsynced *before* the handler acks it: the record
survives the worker's death, and a message recorded but not acked is one the broker
delivers again (a duplicate, counted by the test). The async handler records the same
way, blocking its event loop for the write and fsync (a fraction of a millisecond).
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import json
import os
import time
from typing import Any

import missive
from missive.attempts import RETRIES
from missive.dlq.base import DeadLetterStore
from missive.dlq.sqlite import SQLiteDLQ

#: The largest body the handler accepts; a larger one is dead-lettered.
MAX_BODY = 1024 * 1024
#: How long a DLQ write waits for a lock held by another process, in seconds.
DLQ_TIMEOUT = 0.5


class _Record:
    """Appends one id a line to this process's own file, fsynced at each line.

    Safe from concurrent handler threads: each line is one ``write`` on an
    ``O_APPEND`` descriptor, which the kernel does not interleave with another.
    """

    def __init__(self, directory: str) -> None:
        path = os.path.join(directory, f"handled-{os.getpid()}.log")
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def __call__(self, message_id: bytes) -> None:
        os.write(self._fd, message_id + b"\n")
        os.fsync(self._fd)


def _dlq() -> DeadLetterStore:
    # PostgreSQL when FAULT_DLQ_URL is set (table FAULT_DLQ_TABLE, application_name
    # FAULT_DLQ_APP, so that the test can find and terminate its sessions), else SQLite.
    url = os.environ.get("FAULT_DLQ_URL")
    if not url:
        return SQLiteDLQ(os.environ["FAULT_DLQ"], timeout=DLQ_TIMEOUT)
    from missive.dlq.postgres import PostgresDLQ

    return PostgresDLQ(
        url,
        table=os.environ["FAULT_DLQ_TABLE"],
        application_name=os.environ["FAULT_DLQ_APP"],
        timeout=5.0,
    )


def _retry() -> missive.Retry:
    options = os.environ.get("FAULT_RETRY")
    return missive.Retry(**json.loads(options)) if options else missive.NO_RETRY


def _processor() -> missive.Processor[missive.JSONMessage]:
    processor: missive.Processor[missive.JSONMessage] = missive.Processor(retry=_retry())
    dlq = _dlq()
    processor.set_dlq(dlq)
    record = _Record(os.environ["FAULT_RECORD_DIR"])
    sleep = float(os.environ.get("FAULT_SLEEP") or 0)
    down_until = float(os.environ.get("FAULT_DOWN_UNTIL") or 0)

    def act(message: missive.JSONMessage) -> None:
        # What both handlers do before their sleep: raise, exit or go on.
        body = message.get_json()  # hostile input raises MessageDecodeError here
        if len(message.raw_data) > MAX_BODY:
            raise ValueError(f"a body of {len(message.raw_data)} bytes is over {MAX_BODY}")
        action = body["do"]  # another JSON document raises TypeError or KeyError
        if action == "raise":
            raise RuntimeError("injected failure")
        if action == "exit":
            os._exit(1)
        if action == "once" and RETRIES not in message.attributes:
            raise RuntimeError("injected failure, first delivery only")
        if action == "dependency" and time.time() < down_until:
            raise ConnectionError("the dependency is down")

    def handle(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
        act(message)
        if sleep:
            time.sleep(sleep)
        record(message.message_id)
        ctx.ack()

    async def handle_async(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
        act(message)
        if sleep:
            await asyncio.sleep(sleep)
        record(message.message_id)
        ctx.ack()

    every_message = processor.handle_for(lambda message: True)
    every_message(handle_async if os.environ.get("FAULT_ASYNC") else handle)

    @processor.after_processing
    def close_dlq(ctx: missive.ProcessingContext[Any]) -> None:
        dlq.close()

    return processor


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def _concurrency() -> dict[str, Any]:
    # Only when set: the serial mode constructs the adapters exactly as before.
    value = os.environ.get("FAULT_CONCURRENCY")
    return {"concurrency": int(value)} if value else {}


def rabbitmq_worker() -> missive.Adapter[Any]:
    """A RabbitMQAdapter on ``FAULT_TARGET``, as configured by the environment."""
    from missive.adapters.rabbitmq import RabbitMQAdapter

    return RabbitMQAdapter(
        missive.JSONMessage,
        _processor(),
        os.environ["FAULT_TARGET"],
        url=os.environ["FAULT_URL"],
        prefetch=_int("FAULT_PREFETCH", 100),
        max_deliveries=_int("FAULT_MAX_DELIVERIES", 10),
        retry_delay=0.2,
        max_reconnect_delay=1.0,
        connection_name=os.environ["FAULT_NAME"],
        **_concurrency(),
    )


def streams_worker() -> missive.Adapter[Any]:
    """A RedisStreamsAdapter on the stream ``FAULT_TARGET``, as configured by the environment."""
    from missive.adapters.redis import RedisStreamsAdapter

    return RedisStreamsAdapter(
        missive.JSONMessage,
        _processor(),
        os.environ["FAULT_TARGET"],
        group=os.environ["FAULT_GROUP"],
        url=os.environ["FAULT_URL"],
        batch_size=_int("FAULT_BATCH", 100),
        block_ms=200,
        claim_idle_ms=_int("FAULT_CLAIM_MS", 2000),
        max_deliveries=_int("FAULT_MAX_DELIVERIES", 5),
        max_reconnect_delay=1.0,
        client_name=os.environ["FAULT_NAME"],
        **_concurrency(),
    )


def nats_worker() -> missive.Adapter[Any]:
    """A NATSJetStreamAdapter on the stream ``FAULT_TARGET`` and the durable consumer
    ``FAULT_GROUP`` (made by the test, with its ``ack_wait``), as configured by the
    environment."""
    from missive.adapters.nats import NATSJetStreamAdapter

    return NATSJetStreamAdapter(
        missive.JSONMessage,
        _processor(),
        os.environ["FAULT_TARGET"],
        durable=os.environ["FAULT_GROUP"],
        bind=True,
        url=os.environ["FAULT_URL"],
        connection_name=os.environ["FAULT_NAME"],
        batch_size=_int("FAULT_BATCH", 100),
        max_deliveries=_int("FAULT_MAX_DELIVERIES", 5),
        retry_delay=0.2,
        max_reconnect_delay=1.0,
        **_concurrency(),
    )


#: The lock this process holds on its MQTT client id, for as long as it lives.
_CLIENT_ID_LOCK: list[int] = []


def _free_client_id(prefix: str, directory: str) -> str:
    # The lowest k whose lock file no live process holds (the kernel drops a dead
    # process's flock): a worker started after one was killed, or restarted by
    # `missive run --workers`, resumes that one's session, as a stable client id would.
    for k in itertools.count(1):
        fd = os.open(os.path.join(directory, f"mqtt-client-{k}.lock"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _CLIENT_ID_LOCK.append(fd)
        return f"{prefix}-{k}"
    raise AssertionError("unreachable")


def mqtt_worker() -> missive.Adapter[Any]:
    """An MQTTAdapter (MQTT 5, QoS 1, a persistent session) on the topic ``FAULT_TARGET``
    shared in the group ``FAULT_GROUP``, as configured by the environment.

    Its client id is ``FAULT_NAME-<k>``, the lowest ``k`` no live worker of the run has.
    """
    from missive.adapters.mqtt import MQTTAdapter

    return MQTTAdapter(
        missive.JSONMessage,
        _processor(),
        os.environ["FAULT_TARGET"],
        group=os.environ["FAULT_GROUP"],
        url=os.environ["FAULT_URL"],
        client_id=_free_client_id(os.environ["FAULT_NAME"], os.environ["FAULT_RECORD_DIR"]),
        max_deliveries=_int("FAULT_MAX_DELIVERIES", 10),
        max_reconnect_delay=1.0,
        connect_timeout=5.0,
        **_concurrency(),
    )
