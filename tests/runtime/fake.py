"""A scripted transport for the delivery loop's unit tests: no broker, every call recorded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import missive
from missive.adapters.base import Adapter
from missive.runtime import Batch, Capability, Fault, Transport

Row = tuple[bytes, bytes | None, int | None, str | None]  # body, id, count, problem
Step = list[Row] | BaseException | Callable[[], None] | None  # None: end of input


class ScriptedTransport(Transport):
    """Returns the batches of ``script`` in turn; records every call in ``calls``.

    A step is a list of rows, an exception to raise, a callable run by receive (then
    an empty batch), or ``None``: the end of input. Once the script is used up,
    receive returns empty batches (and the loop goes on until stopped).
    """

    capabilities: ClassVar[Capability] = Capability.REDELIVERY | Capability.HAND_BACK
    broker_name: ClassVar[str] = "Fake"
    ack_limit = 1000

    def __init__(self, script: list[Step], adapter: Adapter[Any] | None = None) -> None:
        self.script = list(script)
        self.calls: list[tuple[Any, ...]] = []
        self.batch = Batch()
        self.adapter = adapter
        self.tag = 0

    def connect(self) -> None:
        self.calls.append(("connect",))
        if self.script and isinstance(self.script[0], ConnectRefusedError):
            raise self.script.pop(0)  # type: ignore[misc]

    def receive(self, max_messages: int, timeout: float) -> Batch:
        batch = self.batch
        batch.clear()
        if not self.script:
            if self.adapter is not None:
                self.adapter.stop()
            return batch
        step = self.script.pop(0)
        if step is None:
            batch.ended = True
        elif isinstance(step, BaseException):
            raise step
        elif callable(step):
            step()
        else:
            for body, message_id, count, problem in step:
                self.tag += 1
                batch.add(body, message_id, {"n": self.tag}, self.tag, count, problem)
        self.calls.append(("receive", len(batch)))
        return batch

    def ack(self, handles: list[Any]) -> None:
        self.calls.append(("ack", list(handles)))

    def requeue(self, handle: Any, delay: float = 0.0) -> None:
        self.calls.append(("requeue", handle, delay))

    def hand_back(self, batch: Batch, start: int) -> None:
        self.calls.append(("hand_back", batch.handles[start:]))

    def flush(self) -> None:
        self.calls.append(("flush",))

    def begin_drain(self) -> None:
        self.calls.append(("begin_drain",))

    def close(self) -> None:
        self.calls.append(("close",))

    def fault(self, exc: BaseException) -> Fault:
        return Fault.RECONNECT if isinstance(exc, ConnectionError) else Fault.FATAL

    def locate(self, handle: Any) -> str | None:
        return f"row {handle}"

    def settled(self) -> list[tuple[Any, ...]]:
        """The calls that settle rows, in order."""
        names = ("ack", "ack_out_of_order", "requeue", "hand_back")
        return [c for c in list(self.calls) if c[0] in names]


class ConnectRefusedError(ConnectionError):
    """Put first in a script: the next connect() raises it."""


class ScriptedAdapter(Adapter[missive.RawMessage]):
    """An adapter whose transport() is a given ScriptedTransport."""

    def __init__(
        self,
        processor: missive.Processor[missive.RawMessage],
        make: Callable[[ScriptedAdapter], ScriptedTransport],
        **settings: Any,
    ) -> None:
        super().__init__(missive.RawMessage, processor)
        self._make = make
        for name, value in settings.items():
            setattr(self, name, value)
        self.transports: list[ScriptedTransport] = []

    def transport(self) -> Transport:
        transport = self._make(self)
        self.transports.append(transport)
        return transport
