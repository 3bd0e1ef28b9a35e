"""The events suite on the stdin adapter, reading lines from a pipe."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import IO, Any

import pytest

import missive
from missive.adapters.stdin import StdinAdapter
from missive.testing.conformance import EventsSuite, WithOptions


class StdinHarness:
    """One pipe per test: ``publish`` writes lines into it, the adapter reads them."""

    name = "stdin"
    capabilities: frozenset[str] = frozenset()  # no redelivery, persistence or groups

    def __init__(self) -> None:
        read, write = os.pipe()
        self._reader: IO[bytes] = os.fdopen(read, "rb", buffering=0)
        self._writer: IO[bytes] = os.fdopen(write, "wb", buffering=0)

    def adapter(
        self, message_cls: type[missive.Message], processor: missive.Processor[Any], **options: Any
    ) -> StdinAdapter[Any]:
        adapter: StdinAdapter[Any] = StdinAdapter(message_cls, processor, self._reader)
        for name, value in options.items():
            setattr(adapter, name, value)
        return adapter

    def publish(self, bodies: Iterable[bytes]) -> None:
        for body in bodies:
            if b"\n" in body:
                raise ValueError("a stdin message is one line")
            self._writer.write(body + b"\n")

    def publish_external(self, body: bytes) -> None:
        raise NotImplementedError("the harness writes the pipe itself")

    def remaining(self) -> int:
        return 0  # a pipe keeps nothing once read

    def kill_connections(self) -> None:
        raise NotImplementedError("a pipe has no connection to drop")

    def close(self) -> None:
        self._writer.close()
        self._reader.close()


@pytest.fixture
def harness() -> Iterator[StdinHarness]:
    harness = StdinHarness()
    yield harness
    harness.close()


class TestStdinEvents(EventsSuite):
    pass



class TestStdinEventsConcurrent(EventsSuite):
    """The same suites with eight messages in flight (``concurrency=8``)."""

    @pytest.fixture
    def harness(self, harness: StdinHarness) -> WithOptions:
        return WithOptions(harness, concurrency=8)
