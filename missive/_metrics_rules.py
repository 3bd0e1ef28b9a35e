"""The rules of :mod:`missive.metrics` that do not depend on where numbers are kept:
the labels of an adapter, and which settle event counts which outcome."""

from __future__ import annotations

from typing import Any

from missive._metrics_local import NO_HANDLER

__all__ = ["Ended", "Open", "adapter_labels", "counted_as"]


class Ended:
    """An open delivery whose outcome is counted already (dead-lettered, failed)."""

    __slots__ = ("message",)

    def __init__(self, message: Any) -> None:
        self.message = message  # kept alive, so that its id() stays unique


#: One delivery on its way, from message_received to its settle event, by id(message):
#: the message itself until handled, then its last HandlingContext (which holds it),
#: or an :class:`Ended` once its outcome is counted. One dict entry, no other object.
Open = Any


def counted_as(entry: Open, message: Any, outcome: str) -> str | None:
    """The handler label to count the settle event ``outcome`` of ``message`` under,
    given its ``entry``; ``None`` when its outcome was counted already."""
    if entry is message:
        return NO_HANDLER  # settled unhandled
    if entry.__class__ is Ended:
        return None
    if outcome == "retried" or entry.failure is None:
        return entry.handler_name or NO_HANDLER
    return None  # a failed handling: dead-lettered or failed, counted as such


def adapter_labels(adapter: Any) -> tuple[str, str]:
    """The ``(adapter, source)`` labels of ``adapter``: its running transport's
    ``system`` and ``source()``; ``("http", path)`` for the WSGI adapter."""
    transport = getattr(adapter, "running_transport", None)
    if transport is not None:
        return str(getattr(transport, "system", "custom")), _source(transport)
    path = getattr(adapter, "path", None)
    if isinstance(path, str):
        return "http", path
    return "custom", ""


def _source(transport: Any) -> str:
    source = getattr(transport, "source", None)
    return str(source()) if callable(source) else ""
