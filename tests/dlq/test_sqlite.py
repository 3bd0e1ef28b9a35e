"""SQLiteDLQ: the DLQ conformance suite, then what is particular to SQLite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from missive.dlq.sqlite import SQLiteDLQ
from tests.conformance.dlq_suite import Features, StoreSuite


@pytest.fixture
def open_sqlite(tmp_path: Path) -> Iterator[Callable[..., SQLiteDLQ]]:
    """Opens SQLiteDLQs on this test's own file (or on ``path``); closes them all after."""
    opened: list[SQLiteDLQ] = []

    def open_dlq(path: str | Path = tmp_path / "dlq.db", **options: object) -> SQLiteDLQ:
        dlq = SQLiteDLQ(path, **options)  # type: ignore[arg-type]
        opened.append(dlq)
        return dlq

    yield open_dlq
    for dlq in opened:
        dlq.close()


class TestSQLiteDLQ(StoreSuite):
    features = Features(persistent=True)

    @pytest.fixture
    def open_dlq(self, open_sqlite: Callable[..., SQLiteDLQ]) -> Callable[[], SQLiteDLQ]:
        return open_sqlite
