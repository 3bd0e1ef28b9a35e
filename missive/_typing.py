"""The old import path of the message type variable (remove in 0.2): see missive._types."""

from missive._types import M

__all__ = ["M"]
