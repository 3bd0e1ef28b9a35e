"""Type variables and aliases shared by the core modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from missive.message import Message

if TYPE_CHECKING:
    # A default lets `missive.Processor()` mean `Processor[Message]` under mypy
    # (PEP 696). Only the type checker needs typing_extensions; the runtime does not.
    from typing_extensions import TypeVar

    M = TypeVar("M", bound=Message, default=Message)
else:
    from typing import TypeVar

    M = TypeVar("M", bound=Message)

__all__ = ["M"]
