"""TestClient: run a processor's handlers in memory, without a broker."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Generic

from missive._typing import M
from missive.context import Outcome, ProcessingContext

if TYPE_CHECKING:
    from missive.processor import Processor

__all__ = ["TestClient"]

_ACKED = Outcome.ACKED
_NACKED = Outcome.NACKED


class TestClient(Generic[M]):
    """Sends messages straight to a processor and records what became of each.

    Get one with :meth:`missive.Processor.test_client`. It behaves as an adapter does:
    the ``before_processing`` hooks run once, before the first message, and the
    ``after_processing`` hooks when the client is closed (or its ``with`` block ends).
    A message that cannot be handled is dead-lettered if the processor has a DLQ,
    and otherwise :meth:`send` raises :class:`~missive.HandlingError`.
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, processor: Processor[M]) -> None:
        self.processor = processor
        #: Messages a handler acked, in order.
        self.acked: list[M] = []
        #: Messages a handler nacked, in order (a broker would redeliver them).
        self.nacked: list[M] = []
        #: Messages stored in the DLQ, in order; like a broker, the client acked them
        #: on the transport, but they are listed here rather than in ``acked``.
        self.dead_lettered: list[M] = []
        self._context: ProcessingContext[M] | None = None
        self._closed = False

    @property
    def processing_context(self) -> ProcessingContext[M]:
        """The processing context, started (before-processing hooks run) on first use."""
        context = self._context
        if context is None:
            if self._closed:
                raise RuntimeError("this test client is closed; get a new one")
            context = self.processor.context()
            context.__enter__()
            self._context = context
        return context

    def send(self, message: M) -> Outcome:
        """Handle ``message`` as an adapter would and record what became of it.

        :raises HandlingError: if it cannot be handled and the processor has no DLQ.
        :raises DLQWriteError: if it cannot be handled and the DLQ write failed.
        """
        context = self._context or self.processing_context
        outcome = context.process(message)
        # _record, inlined: this is the hot path of a test suite.
        if outcome is _ACKED:
            self.acked.append(message)
        elif outcome is _NACKED:
            self.nacked.append(message)
        else:
            self.dead_lettered.append(message)
        return outcome

    async def asend(self, message: M) -> Outcome:
        """:meth:`send`, for ``async`` tests: ``async def`` handlers and hooks are awaited
        on the running event loop; synchronous ones, and the DLQ write, run in a thread.

        ``send`` runs ``async def`` handlers too (on the run's own event loop, waiting
        for them), but only ``asend`` lets a handler await something bound to the
        test's loop.

        :raises HandlingError: if it cannot be handled and the processor has no DLQ.
        :raises DLQWriteError: if it cannot be handled and the DLQ write failed.
        """
        context = self._context or self.processing_context
        outcome = await context.aprocess(message)
        self._record(message, outcome)
        return outcome

    def _record(self, message: M, outcome: Outcome) -> None:
        if outcome is _ACKED:
            self.acked.append(message)
        elif outcome is _NACKED:
            self.nacked.append(message)
        else:
            self.dead_lettered.append(message)

    def close(self) -> None:
        """Run the after-processing hooks (if processing started); idempotent."""
        context, self._context = self._context, None
        self._closed = True
        if context is not None:
            context.__exit__(None, None, None)

    def __enter__(self) -> TestClient[M]:
        _ = self.processing_context
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        context, self._context = self._context, None
        self._closed = True
        if context is not None:
            context.__exit__(exc_type, exc, tb)
