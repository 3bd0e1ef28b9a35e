"""State: the attribute bag that processing and handling contexts carry."""

from __future__ import annotations

from typing import Any

__all__ = ["State"]


class State:
    """A plain attribute bag for hooks and handlers to share data.

    Set any attribute (``ctx.state.start_time = ...``) and read it back later; reading
    one that was never set raises :class:`AttributeError`.
    """

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes that were never set.
        raise AttributeError(f"state has no attribute {name!r}: set it before reading it")

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"State({', '.join(sorted(vars(self)))})"
