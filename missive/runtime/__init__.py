"""The delivery runtime: the one loop under every adapter, and what a transport provides.

The rule of this package: no broker client is imported here. A transport module in
:mod:`missive.adapters` implements :class:`Transport` with its client; the loop,
the poison rule, settling, reconnection and stopping live here, once.
"""

from missive.runtime.backoff import Backoff
from missive.runtime.loop import DeliveryLoop
from missive.runtime.policy import Policy, Requeue, Verdict
from missive.runtime.push import PushDelivery
from missive.runtime.transport import Batch, Capability, Fault, Transport

__all__ = [
    "Backoff",
    "Batch",
    "Capability",
    "DeliveryLoop",
    "Fault",
    "Policy",
    "PushDelivery",
    "Requeue",
    "Transport",
    "Verdict",
]
