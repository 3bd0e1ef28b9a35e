"""Missive: write message handlers once, run them on any transport.

The core imports only the standard library; each transport lives in
``missive.adapters.<name>`` and each DLQ backend in ``missive.dlq.<name>``.
"""

from missive._types import DLQ, Handler, MatcherFunc
from missive.adapters.base import Adapter
from missive.attempts import RetryLater
from missive.context import HandlingContext, Outcome, ProcessingContext
from missive.errors import (
    AlreadySettledError,
    DLQError,
    DLQWriteError,
    HandlingError,
    MatcherError,
    MessageDecodeError,
    MissingExtraError,
    MissiveError,
    RegistrationError,
)
from missive.matchers import Matcher
from missive.message import JSONMessage, Message, RawMessage
from missive.processor import Processor
from missive.reason import DeadLetterReason
from missive.retry import NO_RETRY, Retry
from missive.state import State
from missive.testing import TestClient

__version__ = "0.9.0"

__all__ = [
    "DLQ",
    "NO_RETRY",
    "Adapter",
    "AlreadySettledError",
    "DLQError",
    "DLQWriteError",
    "DeadLetterReason",
    "Handler",
    "HandlingContext",
    "HandlingError",
    "JSONMessage",
    "Matcher",
    "MatcherError",
    "MatcherFunc",
    "Message",
    "MessageDecodeError",
    "MissingExtraError",
    "MissiveError",
    "Outcome",
    "ProcessingContext",
    "Processor",
    "RawMessage",
    "RegistrationError",
    "Retry",
    "RetryLater",
    "State",
    "TestClient",
    "__version__",
]
