"""Processor: the handlers, their matchers, the hooks and the DLQ of one application."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Generic

from missive._types import DLQ, Handler, HandlingHook, M, MatcherFunc, ProcessingHook
from missive.context import ProcessingContext
from missive.events import Observer, Observers
from missive.retry import NO_RETRY, Retry
from missive.routing import Router

if TYPE_CHECKING:
    from missive.testing import TestClient

__all__ = ["DLQ", "Handler", "Matcher", "MatcherFunc", "Processor"]

#: The old name of :data:`missive.MatcherFunc` (remove in 0.2).
Matcher = MatcherFunc


class Processor(Generic[M]):
    """Routes each message to exactly one handler, chosen by matchers.

    Register handlers with :meth:`handle_for` and hooks with the hook decorators, then
    give the processor to an adapter (or to :meth:`test_client`) to run it. A message
    that no handler, or more than one, matches, or whose handling fails, is written to
    the DLQ (see :meth:`set_dlq`) and acked; with no DLQ, :class:`~missive.HandlingError`
    is raised and the message is not acked.

    Type it to check handlers against a message class::

        processor: missive.Processor[missive.JSONMessage] = missive.Processor()

    :param retry: how a message whose handling failed is retried before it is
        dead-lettered (a :class:`~missive.Retry`); by default :data:`~missive.NO_RETRY`,
        dead-lettered at once. A handler can have its own (:meth:`handle_for`).
    :raises TypeError: if ``retry`` is not a :class:`~missive.Retry`.
    """

    def __init__(self, *, retry: Retry = NO_RETRY) -> None:
        _check_retry(retry)
        #: The retry policy of every handler registered without its own; settable.
        self.retry = retry
        #: The routing table.
        self.router: Router[M] = Router()
        self.before_processing_hooks: list[ProcessingHook[M]] = []
        self.after_processing_hooks: list[ProcessingHook[M]] = []
        self.before_handling_hooks: list[HandlingHook[M]] = []
        self.after_handling_hooks: list[HandlingHook[M]] = []
        #: Where messages that cannot be handled are stored; ``None`` until set.
        self.dlq: DLQ | None = None
        #: Who sees every message and connection event (see :meth:`add_observer`).
        self.observers = Observers()

    def handle_for(
        self, matcher: MatcherFunc[M], *, retry: Retry | None = None
    ) -> Callable[[Handler[M]], Handler[M]]:
        """Register the decorated function as the handler for messages ``matcher`` accepts.

        The handler is returned unchanged. Each message must be matched by exactly one
        handler's matcher. Matchers from :mod:`missive.matchers` are indexed, so they
        cost about the same however many handlers there are.

        :param retry: this handler's own retry policy, in place of the processor's
            :attr:`retry` (``None``).
        :raises TypeError: if ``matcher`` is not callable, or ``retry`` not a
            :class:`~missive.Retry`.
        :raises RegistrationError: if the same matcher object is already registered,
            or an indexed matcher certainly overlaps another handler's.
        """
        if not callable(matcher):
            raise TypeError(
                f"a matcher must be callable (message -> bool), not {type(matcher).__name__} "
                f"{matcher!r}"
            )
        if retry is not None:
            _check_retry(retry)

        def register(handler: Handler[M]) -> Handler[M]:
            self.router.add(matcher, handler, retry)
            return handler

        return register

    @property
    def routes(self) -> list[tuple[MatcherFunc[M], Handler[M], str]]:
        """``(matcher, handler, handler name)`` for every handler, in registration order."""
        return self.router.routes

    def before_processing(self, hook: ProcessingHook[M]) -> ProcessingHook[M]:
        """Register a hook run once at startup, before the first message: ``hook(processing_ctx)``.

        If it raises, processing does not start and the error propagates.
        """
        self.before_processing_hooks.append(hook)
        return hook

    def after_processing(self, hook: ProcessingHook[M]) -> ProcessingHook[M]:
        """Register a hook run once at shutdown, even after an error: ``hook(processing_ctx)``."""
        self.after_processing_hooks.append(hook)
        return hook

    def before_handling(self, hook: HandlingHook[M]) -> HandlingHook[M]:
        """Register a hook run before each message: ``hook(processing_ctx, handling_ctx)``.

        If it raises, the message is not handled; it is dead-lettered with that reason.
        """
        self.before_handling_hooks.append(hook)
        return hook

    def after_handling(self, hook: HandlingHook[M]) -> HandlingHook[M]:
        """Register a hook run after each message, even when handling failed.

        Called as ``hook(processing_ctx, handling_ctx)``. If it raises, the message is
        dead-lettered with that reason. After-hooks run in reverse registration order.
        """
        self.after_handling_hooks.append(hook)
        return hook

    def add_observer(self, observer: Observer) -> Observer:
        """Register ``observer`` (a :class:`missive.events.Observer`) for every event.

        It sees the processing events here and, through the adapter that runs this
        processor, the delivery and connection events. Returns ``observer``.
        """
        self.observers.add(observer)
        return observer

    def set_dlq(self, dlq: DLQ | None) -> None:
        """Store messages that cannot be handled in ``dlq``, then ack them.

        ``dlq`` is any ``MutableMapping[bytes, tuple[Message, str]]``: a ``dict`` in
        tests, or a :class:`missive.dlq.base.DeadLetterStore` such as
        :class:`missive.dlq.sqlite.SQLiteDLQ`, which keeps the details of each failure.
        Whoever creates the DLQ closes it; the processor does not. ``None`` unsets it.
        """
        self.dlq = dlq

    def context(self) -> ProcessingContext[M]:
        """A new processing context: what an adapter enters to run the processor."""
        return ProcessingContext(self)

    def test_client(self) -> TestClient[M]:
        """A client that sends messages straight to this processor, for tests."""
        from missive.testing import TestClient

        return TestClient(self)


def _check_retry(retry: object) -> None:
    if not isinstance(retry, Retry):
        raise TypeError(
            f"retry must be a missive.Retry (or missive.NO_RETRY), not {type(retry).__name__}"
        )
