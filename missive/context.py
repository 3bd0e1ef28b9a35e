"""Processing and handling contexts, and the outcome of handling one message."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from inspect import isawaitable
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from missive._aio import LoopThread, is_async_callable
from missive._handling import CANNOT_DELAY, HandlingContext, Outcome
from missive._names import callable_name
from missive._recovery import Recovery, asked_for_retry, policy_for
from missive._types import HandlingHook, M, ProcessingHook
from missive.errors import DLQWriteError, HandlingError
from missive.reason import DeadLetterReason
from missive.routing import NoRoute, Route, raised
from missive.state import State

if TYPE_CHECKING:  # processor.py imports this module at runtime
    from missive.processor import Processor

__all__ = [
    "HandlingContext",
    "HandlingHook",
    "Outcome",
    "ProcessingContext",
    "ProcessingHook",
    "callable_name",
]

logger = logging.getLogger("missive.processor")

T = TypeVar("T")

_ACKED = Outcome.ACKED
_NACKED = Outcome.NACKED
_DEAD_LETTERED = Outcome.DEAD_LETTERED
_RETRY = Outcome.RETRY


class ProcessingContext(Generic[M]):
    """One run of a processor by an adapter: from startup to shutdown.

    Used as a context manager: entering runs the ``before_processing`` hooks, leaving
    runs the ``after_processing`` hooks, even when something raised. In between, the
    adapter calls :meth:`process` for each message it receives. :meth:`process` may be
    called from several threads at once if the handlers allow it.
    """

    def __init__(self, processor: Processor[M]) -> None:
        #: The processor being run.
        self.processor = processor
        #: An attribute bag for the whole run, shared by every hook and handler.
        self.state = State()
        #: Where :meth:`aprocess` runs synchronous hooks, handlers and DLQ writes, so
        #: that they never block the event loop; ``None``: the loop's default executor.
        self.executor: concurrent.futures.Executor | None = None
        #: Whether the caller hands a message back to be handled later (it reads
        #: :attr:`HandlingContext.retry_later` on :attr:`Outcome.RETRY`). Set by the
        #: delivery loop for a transport that can, by the WSGI adapter and the test
        #: client; otherwise a delayed retry due is a dead letter, with
        #: :attr:`cannot_delay` in its reason.
        self.delays_retries = False
        #: Why a delayed retry cannot be made here, for the dead letter's reason.
        self.cannot_delay = CANNOT_DELAY
        #: The time, in seconds since the epoch, for the attempt history and
        #: ``max_total`` (the test client's moves only when it advances).
        self.clock: Callable[[], float] = time.time
        #: The random source of the retry delays' jitter; ``None``: the module's.
        self.rng: random.Random | None = None
        #: Dead letters kept for the delivery loop to store in one transaction before
        #: it acks them (:mod:`missive.runtime.deferred`); ``None``: stored at once.
        self.deferred_dead_letters: list[tuple[M, DeadLetterReason]] | None = None
        # Bound once per run: process() is the hot path.
        self._router = processor.router
        self._observers = processor.observers
        self._loop_thread: LoopThread | None = None
        self._loop_lock = threading.Lock()

    @property
    def loop_thread(self) -> LoopThread:
        """The event loop this run's coroutines run on, started on first use.

        Every ``async def`` hook and handler of the run is awaited there, whichever
        thread reaches it, so what a ``before_processing`` hook opens (an HTTP client, a
        connection pool) is usable by every handler. It stops when the context exits.
        """
        with self._loop_lock:
            if self._loop_thread is None:
                self._loop_thread = LoopThread()
            return self._loop_thread

    def run_async(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` on :attr:`loop_thread` and wait for its result (sync code)."""
        return self.loop_thread.run(awaitable)

    def __enter__(self) -> ProcessingContext[M]:
        try:
            for hook in self.processor.before_processing_hooks:
                result = hook(self)
                if result is not None and isawaitable(result):
                    self.run_async(result)
        except BaseException:
            self._run_after_processing_hooks(raising=False)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._run_after_processing_hooks(raising=exc is None)

    def _run_after_processing_hooks(self, raising: bool) -> None:
        try:
            self._after_processing(raising)
        finally:
            loop_thread, self._loop_thread = self._loop_thread, None
            if loop_thread is not None:
                loop_thread.close()

    def _after_processing(self, raising: bool) -> None:
        first: BaseException | None = None
        for hook in reversed(self.processor.after_processing_hooks):
            try:
                result = hook(self)
                if result is not None and isawaitable(result):
                    self.run_async(result)
            except Exception as exc:
                if first is None:
                    first = exc
                else:
                    name = callable_name(hook)
                    logger.error("after_processing hook %r also raised", name, exc_info=True)
        if first is not None:
            if raising:
                raise first
            logger.error("after_processing hook raised", exc_info=first)

    def process(self, message: M) -> Outcome:
        """Route ``message`` to its one handler, run the handling hooks, and say what became of it.

        Returns ACKED or NACKED as the handler decided. A failed attempt (a hook or
        the handler raised, or the handler settled nothing) is retried as the retry
        policy says: at once, then later (RETRY, where :attr:`delays_retries`; the
        caller reads :attr:`HandlingContext.retry_later` through
        :meth:`handling`). When the message cannot be handled (no handler, several,
        or the policy gives up) it is written to the DLQ and DEAD_LETTERED returned.

        :raises HandlingError: when it cannot be handled and no DLQ is set.
        :raises DLQWriteError: when it cannot be handled and the DLQ write failed.

        In both cases the message must not be acked.
        """
        outcome: Any = self._process(message).outcome
        return outcome  # type: ignore[no-any-return]

    def handling(self, message: M) -> HandlingContext[M]:
        """:meth:`process`, returning the handling context: its ``outcome`` is what
        became of the message, its ``retry_later`` and ``delay`` what the caller needs
        to hand it back (RETRY, or a NACKED with a delay)."""
        return self._process(message)

    async def ahandling(self, message: M) -> HandlingContext[M]:
        """:meth:`aprocess`, returning the handling context (see :meth:`handling`)."""
        return await self._aprocess(message)

    def _process(self, message: M) -> HandlingContext[M]:
        """:meth:`process`'s body: the handling context, its ``outcome`` set."""
        processor = self.processor
        obs = self._observers
        recovery: Recovery[M] | None = None
        while True:  # one turn per attempt: more only on the failure path
            hctx: HandlingContext[M] = HandlingContext(message, self)
            failure: DeadLetterReason | None = None
            if obs:
                obs.handling_started(self, hctx)
                started = perf_counter()
            hooks = processor.before_handling_hooks
            if hooks:
                failure = self._run_before_handling_hooks(hooks, hctx)
            if failure is None:
                # Router.match, inlined (this is the hot path; a call costs ~10% here).
                # The decisions that are not one match stay in the router's methods.
                router = self._router
                matched = 0
                found: Route | None = None
                route: Route | None = None
                current: Any = None
                try:
                    for current, table in router.indexes:
                        value = current.extract(message)
                        try:
                            entries = table.get(value)
                        except TypeError:  # an unhashable value (a list, a dict) is no key
                            continue
                        if entries:
                            for current, route in entries:
                                if current is None or current(message):
                                    matched += 1
                                    found = route
                    for current, route in router.plain:
                        if current(message):
                            matched += 1
                            found = route
                except Exception as exc:
                    failure = router.matcher_failed(current, route, exc).reason
                else:
                    if matched == 1:
                        assert found is not None
                        name = hctx.handler_name = found.name
                        try:
                            result = found.handler(message, hctx)
                            if result is not None and isawaitable(result):  # an async handler
                                self.run_async(result)
                        except Exception as exc:
                            failure = raised(f"handler {name!r}", exc, name)
                    else:
                        failure = router.no_route(matched, message).reason
            hooks = processor.after_handling_hooks
            if hooks:
                hctx.failure = failure
                failure = self._run_after_handling_hooks(hooks, hctx, failure)
            if failure is None:
                outcome = hctx.outcome
                if outcome is _ACKED or outcome is _NACKED:
                    if obs:
                        obs.handling_finished(self, hctx, outcome, perf_counter() - started)
                    return hctx
                if outcome is None:
                    failure = _unsettled(hctx)
                else:  # the handler called retry()
                    failure = asked_for_retry(hctx.handler_name)
            hctx.failure = failure
            if obs:
                obs.handling_finished(self, hctx, None, perf_counter() - started)
            # The failure path. ``found`` is the chosen route only if a handler was chosen.
            if recovery is None:
                recovery = Recovery(message, self.clock, self.rng)
            chosen = found if hctx.handler_name is not None else None
            asked = hctx.outcome is _RETRY
            retry = policy_for(processor.retry, chosen, failure, asked)
            if not recovery.again(failure, retry, asked):
                break
        stored, reason = self._give_up_or_later(recovery, hctx, failure, retry, asked)
        if stored is not None:
            self.dead_letter(stored, reason)
            hctx.outcome = _DEAD_LETTERED
        return hctx

    async def aprocess(self, message: M) -> Outcome:
        """:meth:`process`, for a caller on an event loop: the same decisions and events.

        ``async def`` hooks and handlers are awaited on the running loop; synchronous
        ones, and the DLQ write, run in :attr:`executor`, so they never block it.

        :raises HandlingError: when it cannot be handled and no DLQ is set.
        :raises DLQWriteError: when it cannot be handled and the DLQ write failed.
        """
        outcome: Any = (await self._aprocess(message)).outcome
        return outcome  # type: ignore[no-any-return]

    async def _aprocess(self, message: M) -> HandlingContext[M]:
        """:meth:`aprocess`'s body: the handling context, its ``outcome`` set."""
        processor = self.processor
        obs = self._observers
        recovery: Recovery[M] | None = None
        while True:  # one turn per attempt: more only on the failure path
            hctx: HandlingContext[M] = HandlingContext(message, self)
            failure: DeadLetterReason | None = None
            if obs:
                obs.handling_started(self, hctx)
            started = perf_counter()
            hooks = processor.before_handling_hooks
            chosen: Route | None = None
            if hooks:
                failure = await self._arun_before_handling_hooks(hooks, hctx)
            if failure is None:
                route = self._router.match(message)
                if isinstance(route, NoRoute):
                    failure = route.reason
                else:
                    chosen = route
                    name = hctx.handler_name = route.name
                    try:
                        if route.is_async:
                            await route.handler(message, hctx)  # type: ignore[misc]
                        else:
                            await self._acall(route.handler, message, hctx)
                    except Exception as exc:
                        failure = raised(f"handler {name!r}", exc, name)
            hooks = processor.after_handling_hooks
            if hooks:
                hctx.failure = failure
                failure = await self._arun_after_handling_hooks(hooks, hctx, failure)
            if failure is None:
                outcome = hctx.outcome
                if outcome is _ACKED or outcome is _NACKED:
                    if obs:
                        obs.handling_finished(self, hctx, outcome, perf_counter() - started)
                    return hctx
                if outcome is None:
                    failure = _unsettled(hctx)
                else:  # the handler called retry()
                    failure = asked_for_retry(hctx.handler_name)
            hctx.failure = failure
            if obs:
                obs.handling_finished(self, hctx, None, perf_counter() - started)
            if recovery is None:
                recovery = Recovery(message, self.clock, self.rng)
            asked = hctx.outcome is _RETRY
            retry = policy_for(processor.retry, chosen, failure, asked)
            if not recovery.again(failure, retry, asked):
                break
        stored, reason = self._give_up_or_later(recovery, hctx, failure, retry, asked)
        if stored is not None:
            await self.in_executor(self.dead_letter, stored, reason)
            hctx.outcome = _DEAD_LETTERED
        return hctx

    def _give_up_or_later(
        self,
        recovery: Recovery[M],
        hctx: HandlingContext[M],
        failure: DeadLetterReason,
        retry: Any,
        asked: bool,
    ) -> tuple[M | None, DeadLetterReason]:
        """After the last attempt of a delivery: set RETRY on ``hctx`` and return
        ``(None, failure)``, or return the message and reason to dead-letter."""
        delay = recovery.later(failure, retry, asked, hctx.delay)
        note = None
        if delay is not None:
            if self.delays_retries:
                hctx._retry_later = recovery.retry_later(failure, delay)
                hctx.outcome = _RETRY
                return None, failure
            note = self.cannot_delay
        return recovery.dead_letter(failure, note)

    async def in_executor(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` in :attr:`executor`, from the event loop, and await it.

        It runs in a copy of the caller's context variables (as ``asyncio.to_thread``
        does), so that a span or a value a hook set is current there too.
        """
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, function, *args)
        return await loop.run_in_executor(self.executor, call)

    async def _acall(self, function: Callable[..., object], *args: Any) -> None:
        """Call a hook or handler from the event loop: awaited if async, else in the executor."""
        if is_async_callable(function):
            await function(*args)  # type: ignore[misc]
            return
        result = await self.in_executor(function, *args)
        if result is not None and isawaitable(result):
            await result

    def dead_letter(self, message: M, reason: str) -> Outcome:
        """Store ``message`` in the DLQ with ``reason``; returns DEAD_LETTERED.

        Adapters call it for messages they cannot give back to their transport (a
        nacked message on stdin, for example).

        Observers see ``dead_lettered`` after the write, or ``dlq_write_failed``
        (with ``error=None`` when no DLQ is set).

        :raises HandlingError: if no DLQ is set.
        :raises DLQWriteError: if the DLQ write failed.
        """
        processor = self.processor
        dlq = processor.dlq
        if dlq is None:
            obs = processor.observers
            if obs:
                full = reason if isinstance(reason, DeadLetterReason) else DeadLetterReason(reason)
                obs.dlq_write_failed(message, full, None)
            raise HandlingError(message.message_id, reason) from getattr(reason, "exception", None)
        if not isinstance(reason, DeadLetterReason):
            reason = DeadLetterReason(reason)
        deferred = self.deferred_dead_letters
        if deferred is not None:  # the delivery loop stores it before the ack
            deferred.append((message, reason))
            return _DEAD_LETTERED
        try:
            dlq[message.message_id] = (message, reason)
        except Exception as exc:
            obs = processor.observers
            if obs:
                obs.dlq_write_failed(message, reason, exc)
            raise DLQWriteError(message.message_id, reason, exc) from exc
        self.stored(message, reason)
        return _DEAD_LETTERED

    def stored(self, message: M, reason: DeadLetterReason) -> None:
        """Log a dead letter written to the DLQ and tell the observers."""
        if logger.isEnabledFor(logging.WARNING):
            self._log_stored(message, reason)
        obs = self.processor.observers
        if obs:
            obs.dead_lettered(message, reason)

    def _log_stored(self, message: M, reason: DeadLetterReason) -> None:
        logger.warning(
            "message %r (%d bytes) dead-lettered: %s",
            message.message_id,
            len(message.raw_data),
            reason.summary,
            extra={
                "message_id": message.message_id,
                "handler": reason.handler,
                "outcome": "dead_lettered",
            },
        )

    def _run_before_handling_hooks(
        self, hooks: list[HandlingHook[M]], hctx: HandlingContext[M]
    ) -> DeadLetterReason | None:
        for hook in hooks:
            try:
                result = hook(self, hctx)
                if result is not None and isawaitable(result):  # an async hook
                    self.run_async(result)
            except Exception as exc:
                return _before_handling_failed(hook, exc, hctx)
        return None

    def _run_after_handling_hooks(
        self,
        hooks: list[HandlingHook[M]],
        hctx: HandlingContext[M],
        failure: DeadLetterReason | None,
    ) -> DeadLetterReason | None:
        for hook in reversed(hooks):
            try:
                result = hook(self, hctx)
                if result is not None and isawaitable(result):  # an async hook
                    self.run_async(result)
            except Exception as exc:
                failure = _after_handling_failed(hook, exc, hctx, failure)
        return failure

    async def _arun_before_handling_hooks(
        self, hooks: list[HandlingHook[M]], hctx: HandlingContext[M]
    ) -> DeadLetterReason | None:
        for hook in hooks:
            try:
                await self._acall(hook, self, hctx)
            except Exception as exc:
                return _before_handling_failed(hook, exc, hctx)
        return None

    async def _arun_after_handling_hooks(
        self,
        hooks: list[HandlingHook[M]],
        hctx: HandlingContext[M],
        failure: DeadLetterReason | None,
    ) -> DeadLetterReason | None:
        for hook in reversed(hooks):
            try:
                await self._acall(hook, self, hctx)
            except Exception as exc:
                failure = _after_handling_failed(hook, exc, hctx, failure)
        return failure


def _unsettled(hctx: HandlingContext[Any]) -> DeadLetterReason:
    """The reason for a handler that returned without acking or nacking."""
    return DeadLetterReason(
        f"handler {hctx.handler_name!r} returned without acking or nacking the message",
        handler=hctx.handler_name,
    )


def _before_handling_failed(
    hook: HandlingHook[Any], exc: Exception, hctx: HandlingContext[Any]
) -> DeadLetterReason:
    """The reason when a ``before_handling`` hook raised: the message is not handled."""
    return raised(f"before_handling hook {callable_name(hook)!r}", exc, hctx.handler_name)


def _after_handling_failed(
    hook: HandlingHook[Any],
    exc: Exception,
    hctx: HandlingContext[Any],
    failure: DeadLetterReason | None,
) -> DeadLetterReason:
    """The failure once an ``after_handling`` hook raised: the first error is the reason,
    a later one is only logged."""
    if failure is None:
        what = f"after_handling hook {callable_name(hook)!r}"
        failure = hctx.failure = raised(what, exc, hctx.handler_name)
    else:
        logger.error(
            "after_handling hook %r also raised %s for message %r",
            callable_name(hook),
            type(exc).__qualname__,
            hctx.message.message_id,
            extra={"message_id": hctx.message.message_id, "handler": hctx.handler_name},
        )
    return failure
