"""Public conformance suites: the tests every Missive adapter and every DLQ must pass.

For the authors of third-party adapters and DLQs as much as for Missive's own. Needs
pytest, the optional dependency ``missive[testing]``; importing this package without it
raises :class:`~missive.MissingExtraError`. ``import missive`` and ``import
missive.testing`` never import it.

An adapter: write a :class:`Harness` for the transport (:class:`MemoryHarness` is a
complete, small example), provide it through a ``harness`` fixture that closes it after
each test, and subclass :class:`AdapterSuite`::

    import pytest
    from missive.testing.conformance import AdapterSuite

    @pytest.fixture
    def harness():
        h = MyHarness()
        yield h
        h.close()

    class TestMine(AdapterSuite):
        pass

A DLQ: subclass :class:`MappingSuite` (any mapping) or :class:`StoreSuite` (a
:class:`~missive.dlq.DeadLetterStore`), set ``features`` and override the ``open_dlq``
fixture (see :mod:`missive.testing.conformance.dlq_suite`).

The harness's capability flags (:data:`REDELIVERY`, :data:`PERSISTENCE`, ...) decide
which tests apply; the others are skipped, saying why. :class:`EventsSuite` checks, the
same way, the events an adapter's observers see (a
:class:`RecordingObserver` records them): subclass both.
"""

from __future__ import annotations

from missive.errors import MissingExtraError

try:
    import pytest
except ImportError as _exc:  # pragma: no cover - depends on what is installed
    raise MissingExtraError("testing", "missive.testing.conformance") from _exc

# Before the suites are imported, so that a failing assert in them explains itself.
pytest.register_assert_rewrite(
    *(
        f"{__name__}.{name}"
        for name in (
            "adapter_suite",
            "dlq_suite",
            "events_suite",
            "memory",
            "retries_suite",
            "support",
        )
    )
)

from missive.testing.conformance.adapter_suite import AdapterSuite  # noqa: E402
from missive.testing.conformance.dlq_suite import (  # noqa: E402
    Features,
    MappingSuite,
    StoreSuite,
    failure,
    put,
)
from missive.testing.conformance.events_suite import EventsSuite  # noqa: E402
from missive.testing.conformance.harness import (  # noqa: E402
    CONSUMER_GROUPS,
    DELAYED_RETRY,
    EXTERNAL_PUBLISHER,
    KILL_CONNECTION,
    PATTERNS,
    PERSISTENCE,
    REDELIVERY,
    Harness,
    WithOptions,
    needs,
)
from missive.testing.conformance.memory import (  # noqa: E402
    MemoryAdapter,
    MemoryBroker,
    MemoryHarness,
    MemoryTransport,
)
from missive.testing.conformance.retries_suite import DelayedRetrySuite  # noqa: E402
from missive.testing.conformance.support import (  # noqa: E402
    TIMEOUT,
    Recorder,
    RecordingObserver,
    memory_growth,
    running,
    running_allowing,
    wait_until,
)

__all__ = [
    "CONSUMER_GROUPS",
    "DELAYED_RETRY",
    "EXTERNAL_PUBLISHER",
    "KILL_CONNECTION",
    "PATTERNS",
    "PERSISTENCE",
    "REDELIVERY",
    "TIMEOUT",
    "AdapterSuite",
    "DelayedRetrySuite",
    "EventsSuite",
    "Features",
    "Harness",
    "MappingSuite",
    "MemoryAdapter",
    "MemoryBroker",
    "MemoryHarness",
    "MemoryTransport",
    "Recorder",
    "RecordingObserver",
    "StoreSuite",
    "WithOptions",
    "failure",
    "memory_growth",
    "needs",
    "put",
    "running",
    "running_allowing",
    "wait_until",
]
