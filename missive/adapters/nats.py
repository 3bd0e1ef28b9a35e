"""NATS adapters: :class:`NATSJetStreamAdapter` (at-least-once) and :class:`NATSAdapter`
(core NATS, at-most-once).

Needs the optional dependency ``missive[nats]`` (nats-py); importing this module
without it raises :class:`~missive.MissingExtraError`. Both adapters connect to
``url``, else the ``NATS_URL`` environment variable, else ``nats://127.0.0.1:4222``.
nats-py is asyncio-only: each run's connection lives on an event loop in a thread of
its own, which the delivery loop's thread drives. See ``docs/nats.md``.
"""

from __future__ import annotations

from missive.errors import MissingExtraError

try:
    import nats  # noqa: F401 - imported first so that a missing extra is reported clearly
except ImportError as _exc:  # pragma: no cover - depends on what is installed
    raise MissingExtraError("nats", "missive.adapters.nats") from _exc

from missive.adapters._nats_common import DEFAULT_URL
from missive.adapters._nats_core import NATSAdapter
from missive.adapters._nats_jetstream import DEFAULT_DURABLE, NATSJetStreamAdapter

__all__ = ["DEFAULT_DURABLE", "DEFAULT_URL", "NATSAdapter", "NATSJetStreamAdapter"]

# The public path, in reprs, docs and tracebacks.
NATSAdapter.__module__ = NATSJetStreamAdapter.__module__ = __name__
