"""The DLQ conformance suite against a plain dict: the simplest DLQ, used in tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import missive
from missive.testing.conformance.dlq_suite import MappingSuite


class TestDictDLQ(MappingSuite):
    @pytest.fixture
    def open_dlq(self) -> Callable[[], missive.DLQ]:
        return dict
