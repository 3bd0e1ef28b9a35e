"""The rules of :mod:`missive.metrics` that do not depend on where numbers are kept:
the labels of an adapter, and which settle event counts which outcome."""

from __future__ import annotations

from typing import Any

from missive._metrics_local import NO_HANDLER

__all__ = ["Open", "adapter_labels", "counted_as"]

#: One delivery on its way, from message_received to its settle event: [message (kept
#: alive, so its id() stays unique), its last HandlingContext or None, outcome counted].
Open = list[Any]


def counted_as(entry: Open, outcome: str) -> str | None:
    """The handler label to count a delivery's settle event ``outcome`` under, or
    ``None`` when its outcome was counted already (dead-lettered, failed)."""
    hctx = entry[1]
    if hctx is None:
        return None if entry[2] else NO_HANDLER
    if outcome == "retried" or not (entry[2] or hctx.failure is not None):
        return hctx.handler_name or NO_HANDLER
    return None


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
