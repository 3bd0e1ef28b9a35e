"""The delayed retries' copies, published and committed on a thread of their own.

A copy must be on RabbitMQ's disk before its original is acked, and a commit waits
for that (an fsync: a millisecond or more). The consumer's thread never waits for it:
it hands each copy to a :class:`CopyPublisher`, goes on handling, and acks the
original once the publisher has handed its delivery tag back as committed. The
publisher owns the copies' connection (pika connections are not thread-safe); the
consumer's channel stays on the consumer's thread.

Copies that arrive while a commit is in flight go in the next transaction, so the
commits group themselves under load. An error (a lost connection, a copy RabbitMQ
could not route) stops the publisher and is raised by the consumer's next call: the
originals not acked come back, and the copies not committed are dropped with the
connection. A crash between a commit and the ack duplicates a retry, never loses it.

Only :mod:`missive.adapters._rabbitmq_delays` uses this module, once
:mod:`missive.adapters.rabbitmq` found pika.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import Any

import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import BasicProperties

__all__ = ["CopyPublisher"]

#: The most copies one transaction holds.
MAX_BATCH = 500
# How often an idle publisher lets its connection answer RabbitMQ's heartbeats.
_IDLE = 5.0
_STOP = None

_Job = tuple[int, str, bytes, BasicProperties]


class CopyPublisher:
    """Publishes copies in transactions on ``channel`` (in ``tx_select`` mode), from a
    thread of its own, and hands back the delivery tags of their originals once
    committed; ``wake`` is called (from that thread) after each commit.

    The consumer's thread calls :meth:`submit`, :meth:`committed`, :meth:`wait_idle`
    and :meth:`close`; nothing else touches the connection once this runs.
    """

    def __init__(
        self,
        connection: BlockingConnection,
        channel: BlockingChannel,
        wake: Callable[[], None],
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._wake = wake
        self._jobs: SimpleQueue[_Job | None] = SimpleQueue()
        self._done: SimpleQueue[list[int]] = SimpleQueue()
        self._returned = 0
        channel.add_on_return_callback(self._on_return)
        self._settled = threading.Condition()
        self._submitted = self._finished = 0
        #: The error that stopped the publisher, raised by the consumer's next call.
        self.failure: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name="missive-rabbitmq-retries", daemon=True
        )
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Copies submitted and not committed (nor failed) yet."""
        return self._submitted - self._finished

    def submit(self, tag: int, routing_key: str, body: bytes, properties: BasicProperties) -> None:
        """Publish a copy of delivery ``tag`` to the queue ``routing_key``, in the next
        transaction; its tag comes back from :meth:`committed` once it is on disk."""
        self._submitted += 1
        self._jobs.put((tag, routing_key, body, properties))

    def committed(self) -> list[int]:
        """The tags whose copies were committed since the last call, in commit order."""
        done = self._done
        tags: list[int] = []
        while True:
            try:
                tags += done.get_nowait()
            except Empty:
                return tags

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every copy submitted is committed or the publisher failed."""
        with self._settled:
            return self._settled.wait_for(
                lambda: self._finished >= self._submitted or self.failure is not None,
                timeout,
            )

    def close(self, timeout: float) -> None:
        """Commit what was submitted (within ``timeout`` s), stop, and close the
        connection: copies still uncommitted are dropped with it."""
        self._jobs.put(_STOP)
        self._thread.join(timeout)
        connection = self._connection
        if not self._thread.is_alive() and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()

    def _on_return(self, *args: Any) -> None:
        self._returned += 1

    def _run(self) -> None:
        jobs, channel, connection = self._jobs, self._channel, self._connection
        try:
            while True:
                try:
                    job = jobs.get(timeout=_IDLE)
                except Empty:
                    connection.process_data_events(time_limit=0)
                    continue
                tags: list[int] = []
                while job is not _STOP:
                    tag, routing_key, body, properties = job
                    channel.basic_publish("", routing_key, body, properties, mandatory=True)
                    tags.append(tag)
                    if len(tags) >= MAX_BATCH:
                        break
                    try:
                        job = jobs.get_nowait()
                    except Empty:
                        break
                if tags:
                    self._commit(tags)
                if job is _STOP:
                    return
        except Exception as exc:
            self.failure = exc
            with self._settled:
                self._settled.notify_all()
            self._wake()

    def _commit(self, tags: list[int]) -> None:
        self._channel.tx_commit()
        self._connection.process_data_events(time_limit=0)  # runs _on_return per return
        if self._returned:
            raise pika.exceptions.AMQPChannelError(
                f"RabbitMQ could not route {self._returned} delayed retries to their delay "
                "queue (deleted while the adapter ran?): their messages are not acked and "
                "come again; the next connection declares the delay queues again"
            )
        self._done.put(tags)
        with self._settled:
            self._finished += len(tags)
            self._settled.notify_all()
        self._wake()
