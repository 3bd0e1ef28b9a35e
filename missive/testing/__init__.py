"""TestClient: run a processor's handlers in memory, without a broker."""

from __future__ import annotations

import heapq
import itertools
import time
from types import TracebackType
from typing import TYPE_CHECKING, Generic

from missive._typing import M
from missive.attempts import with_state
from missive.context import HandlingContext, Outcome, ProcessingContext

if TYPE_CHECKING:
    from missive.processor import Processor

__all__ = ["TestClient"]

_ACKED = Outcome.ACKED
_NACKED = Outcome.NACKED
_RETRY = Outcome.RETRY


class TestClient(Generic[M]):
    """Sends messages straight to a processor and records what became of each.

    Get one with :meth:`missive.Processor.test_client`. It behaves as an adapter does:
    the ``before_processing`` hooks run once, before the first message, and the
    ``after_processing`` hooks when the client is closed (or its ``with`` block ends).
    A message that cannot be handled is dead-lettered if the processor has a DLQ,
    and otherwise :meth:`send` raises :class:`~missive.HandlingError`.

    Delayed retries are kept at a virtual time: :attr:`retried` lists them, and
    :meth:`advance` moves the clock and handles those due, so a test never sleeps.
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
        #: ``(message, delay)`` for each delayed retry, in order: the message as it
        #: failed, and the seconds until :meth:`advance` handles it again.
        self.retried: list[tuple[M, float]] = []
        #: The virtual time, in seconds since the epoch: the clock of the attempt
        #: history and ``max_total``. Only :meth:`advance` moves it.
        self.now = time.time()
        # (due, order, message with its attempt state): a heap of the delayed retries.
        self._due: list[tuple[float, int, M]] = []
        self._order = itertools.count()
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
            context.delays_retries = True
            context.clock = self._clock
            context.__enter__()
            self._context = context
        return context

    def send(self, message: M) -> Outcome:
        """Handle ``message`` as an adapter would and record what became of it.

        :raises HandlingError: if it cannot be handled and the processor has no DLQ.
        :raises DLQWriteError: if it cannot be handled and the DLQ write failed.
        """
        context = self._context or self.processing_context
        hctx = context._process(message)
        outcome = hctx.outcome
        # _record, inlined: this is the hot path of a test suite.
        if outcome is _ACKED:
            self.acked.append(message)
        elif outcome is _NACKED:
            self.nacked.append(message)
        else:
            self._record(hctx)
        assert outcome is not None
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
        hctx = await context._aprocess(message)
        self._record(hctx)
        assert hctx.outcome is not None
        return hctx.outcome

    def advance(self, seconds: float) -> list[Outcome]:
        """Move the virtual clock ``seconds`` on and handle again, with :meth:`send`, each
        delayed retry now due (earliest first), its attempt state updated; returns their
        outcomes. A retry scheduled meanwhile is handled too if it falls due in time.

        :raises ValueError: if ``seconds`` is negative.
        """
        end = self._end(seconds)
        outcomes = []
        while (message := self._next_due(end)) is not None:
            outcomes.append(self.send(message))
        self.now = end
        return outcomes

    async def aadvance(self, seconds: float) -> list[Outcome]:
        """:meth:`advance`, handling each due retry with :meth:`asend`."""
        end = self._end(seconds)
        outcomes = []
        while (message := self._next_due(end)) is not None:
            outcomes.append(await self.asend(message))
        self.now = end
        return outcomes

    def _end(self, seconds: float) -> float:
        if not seconds >= 0:
            raise ValueError(f"time only moves forward: seconds must be 0 or more, not {seconds}")
        return self.now + seconds

    def _next_due(self, end: float) -> M | None:
        """The next delayed retry due by ``end``, the clock moved to its time; or ``None``."""
        if not self._due or self._due[0][0] > end:
            return None
        when, _, message = heapq.heappop(self._due)
        self.now = max(self.now, when)
        return message

    def _clock(self) -> float:
        return self.now

    def _record(self, hctx: HandlingContext[M]) -> None:
        message, outcome = hctx.message, hctx.outcome
        if outcome is _ACKED:
            self.acked.append(message)
        elif outcome is _NACKED:
            self.nacked.append(message)
        elif outcome is _RETRY:
            retry_later = hctx.retry_later
            assert retry_later is not None
            self.retried.append((message, retry_later.delay))
            again = with_state(message, retry_later.state)
            entry = (self.now + retry_later.delay, next(self._order), again)
            heapq.heappush(self._due, entry)
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
