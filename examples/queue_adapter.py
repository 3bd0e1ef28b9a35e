"""A custom adapter: messages from a Python ``queue.Queue`` (an in-process "broker").

An adapter provides a :class:`missive.runtime.Transport`, the broker's primitives:
receive, ack, requeue, close. ``Adapter.run()`` drives it with Missive's delivery loop,
which keeps the contract of :class:`missive.Adapter`: the processing hooks bracket the
run, a message is acked only after it is handled or stored in the DLQ, a nacked
message is requeued, and ``stop()`` (or SIGINT and SIGTERM) finishes the message in
hand and returns.
"""

import queue
from typing import Any, TypeVar

import missive
from missive.runtime import Batch, Capability, Transport

M = TypeVar("M", bound=missive.Message)
Pair = tuple[bytes, bytes]  # (message_id, body)


class QueueTransport(Transport):
    """Takes ``(message_id, body)`` pairs from ``source``; an ack appends the id to ``done``."""

    # A requeued pair comes back with its id; pairs wait on the queue for a consumer;
    # several consumers can share one queue, each pair going to one of them.
    capabilities = Capability.REDELIVERY | Capability.PERSISTENCE | Capability.CONSUMER_GROUPS
    # A message neither handled nor stored (no DLQ set) is put back, then run() raises.
    stop_on_loss = True

    def __init__(self, source: "queue.Queue[Pair]", done: list[bytes]) -> None:
        self.source = source
        self.done = done
        self.batch = Batch()  # one batch, cleared by each receive

    def connect(self) -> None:
        """Nothing to open: the queue is in this process."""

    def receive(self, max_messages: int, timeout: float) -> Batch:
        self.batch.clear()
        try:
            message_id, body = self.source.get(timeout=timeout)
        except queue.Empty:
            return self.batch  # nothing came: the loop checks for a stop and asks again
        self.batch.add(body, message_id, {"queue": "local"}, handle=(message_id, body))
        return self.batch

    def ack(self, handles: list[Any]) -> None:
        self.done.extend(message_id for message_id, _ in handles)

    def requeue(self, handle: Any, delay: float = 0.0) -> None:
        self.source.put(handle)

    def close(self) -> None:
        """Nothing to close."""


class QueueAdapter(missive.Adapter[M]):
    """Consumes ``(message_id, body)`` pairs from ``source``; "acks" into ``done``."""

    poll_timeout = 0.1  # how long one receive waits, so how soon a stop is seen

    def __init__(
        self, message_cls: type[M], processor: missive.Processor[M], source: "queue.Queue[Pair]"
    ) -> None:
        super().__init__(message_cls, processor)
        self.source = source
        self.done: list[bytes] = []

    def transport(self) -> QueueTransport:
        return QueueTransport(self.source, self.done)


def demo() -> list[Any]:
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()

    @processor.handle_for(lambda m: m.get_json().get("kind") == "greeting")
    def greet(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
        print("hello,", message.get_json()["name"])
        ctx.ack()

    processor.set_dlq({})
    source: queue.Queue[Pair] = queue.Queue()
    source.put((b"1", b'{"kind": "greeting", "name": "Ada"}'))
    source.put((b"2", b'{"kind": "unknown"}'))
    adapter = QueueAdapter(missive.JSONMessage, processor, source)

    @processor.after_handling
    def stop_when_drained(p: Any, h: Any) -> None:
        if source.empty():
            adapter.stop()

    adapter.run()
    return adapter.done


if __name__ == "__main__":
    print("settled:", demo())
