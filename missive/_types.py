"""Type variables and aliases shared by the core modules: a leaf, imported by all of them."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING

from missive._names import callable_name
from missive.message import Message

if TYPE_CHECKING:
    # For the annotations of the aliases only: context.py imports this module.
    # A default lets `missive.Processor()` mean `Processor[Message]` under mypy
    # (PEP 696). Only the type checker needs typing_extensions; the runtime does not.
    from typing_extensions import TypeVar

    from missive.context import HandlingContext, ProcessingContext

    M = TypeVar("M", bound=Message, default=Message)
else:
    from typing import TypeVar

    M = TypeVar("M", bound=Message)

__all__ = [
    "DLQ",
    "Handler",
    "HandlingHook",
    "M",
    "MatcherFunc",
    "ProcessingHook",
    "callable_name",
]

#: Any callable that says whether a message is for a handler.
MatcherFunc = Callable[[M], object]
#: A handler: takes the message and its handling context, and acks or nacks it.
Handler = Callable[[M, "HandlingContext[M]"], object]
#: A dead-letter queue: any mutable mapping from message id to (message, reason).
DLQ = MutableMapping[bytes, tuple[M, str]]
#: A before/after processing hook: ``hook(processing_ctx)``.
ProcessingHook = Callable[["ProcessingContext[M]"], object]
#: A before/after handling hook: ``hook(processing_ctx, handling_ctx)``.
HandlingHook = Callable[["ProcessingContext[M]", "HandlingContext[M]"], object]
