"""PushDelivery: the delivery policy and events for a transport that calls us per message."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Generic

from missive._typing import M
from missive.attempts import RetryLater
from missive.context import ProcessingContext
from missive.errors import DLQWriteError, HandlingError
from missive.runtime.policy import Policy, Requeue, Verdict
from missive.runtime.transport import Batch, Capability, Transport

if TYPE_CHECKING:
    from missive.adapters.base import Adapter

__all__ = ["PushDelivery"]


class _Sender(Transport):
    """A push transport seen from the policy: its sender redelivers when asked to, after
    the delay it is told (``Retry-After``)."""

    capabilities: ClassVar[Capability] = (
        Capability.REDELIVERY | Capability.DELAYED_REQUEUE | Capability.DELAYED_RETRY
    )

    def connect(self) -> None:
        raise NotImplementedError("a push transport is never connected to by the loop")

    def receive(self, max_messages: int, timeout: float) -> Batch:
        raise NotImplementedError("a push transport is never received from by the loop")

    def close(self) -> None:
        pass


class PushDelivery(Generic[M]):
    """What the pull loop decides for each message, for a server that calls us (WSGI).

    It keeps no state between calls, so a threaded server's threads share one.

    :param adapter: the adapter, for its processor and ``max_deliveries``.
    :param context: the processing context, entered by the adapter.
    """

    __slots__ = ("_observers", "_policy")

    def __init__(self, adapter: Adapter[M], context: ProcessingContext[M]) -> None:
        self._policy: Policy[M] = Policy(context, _Sender(), adapter.max_deliveries)
        self._observers = adapter.processor.observers

    def deliver(
        self, message: M, count: int | None = 1
    ) -> Verdict | Requeue | RetryLater | HandlingError | DLQWriteError:
        """Process ``message``; return ACK, DEAD_LETTERED, REQUEUE, a :class:`Requeue`
        (a nack with a delay), a :class:`~missive.RetryLater` (a delayed retry), or the
        error raised.

        The caller answers accordingly: done, stored, "retry later" (after the delay),
        or "not stored, retry later". Observers see a delayed retry as ``retried``, the
        others as ``requeued``: the sender has it back.
        """
        observers = self._observers
        if observers:
            observers.message_received(message, count)
        verdict = self._policy.handle(message, count, None, False)
        if observers:
            if verdict is Verdict.ACK or verdict is Verdict.DEAD_LETTERED:
                observers.acked(message)
            elif isinstance(verdict, RetryLater):
                observers.retried(message, verdict.delay)
            else:
                observers.requeued(message, verdict.delay if isinstance(verdict, Requeue) else 0.0)
        return verdict
