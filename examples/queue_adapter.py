"""A custom adapter: messages from a Python ``queue.Queue`` (an in-process "broker").

It keeps the contract of :class:`missive.Adapter` in a few lines: the processing
hooks bracket the run, a message is acked only after it is handled or stored in
the DLQ, a nacked message goes back on the queue, and ``stop()`` (or SIGINT and
SIGTERM) finishes the message in hand and returns.
"""

import queue
from typing import Any, TypeVar

import missive

M = TypeVar("M", bound=missive.Message)


class QueueAdapter(missive.Adapter[M]):
    """Consumes ``(message_id, body)`` pairs from ``source``; "acks" into ``done``."""

    def __init__(
        self,
        message_cls: type[M],
        processor: missive.Processor[M],
        source: "queue.Queue[tuple[bytes, bytes]]",
    ) -> None:
        super().__init__(message_cls, processor)
        self.source = source
        self.done: list[bytes] = []

    def run(self) -> None:
        with self.stop_on_signals(), self.processor.context() as context:
            self._set_ready()
            while not self.stop_requested:
                try:
                    message_id, body = self.source.get(timeout=0.1)
                except queue.Empty:
                    continue
                message = self.message_cls(body, message_id, {"queue": "local"})
                # process() raises HandlingError/DLQWriteError when the message must
                # not be acked: put it back, and let the error stop the run.
                try:
                    outcome = context.process(message)
                except missive.MissiveError:
                    self.source.put((message_id, body))
                    raise
                if outcome is missive.Outcome.NACKED:
                    self.source.put((message_id, body))  # redeliver later
                else:
                    self.done.append(message_id)  # ACKED or DEAD_LETTERED: ack


def demo() -> list[Any]:
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()

    @processor.handle_for(lambda m: m.get_json().get("kind") == "greeting")
    def greet(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
        print("hello,", message.get_json()["name"])
        ctx.ack()

    processor.set_dlq({})
    source: queue.Queue[tuple[bytes, bytes]] = queue.Queue()
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
