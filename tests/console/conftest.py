"""Fixtures of the console tests: a real SQLite DLQ filled by a processor whose
handlers fail, from a module written into the test's directory."""

from __future__ import annotations

import importlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

import missive
from missive.dlq.sqlite import SQLiteDLQ

#: A processor whose ``orders`` handler raises until a file named ``fixed`` exists
#: next to it, and whose ``pages`` handler always raises with the payload's text in
#: its reason (as careless handlers do).
SHOP = """
from pathlib import Path

import missive

HERE = Path(__file__).parent
processor: missive.Processor[missive.RawMessage] = missive.Processor()


@processor.handle_for(lambda m: m.raw_data.startswith(b"order"))
def orders(message, ctx):
    if not (HERE / "fixed").exists():
        raise RuntimeError("orders are broken")
    ctx.ack()


@processor.handle_for(lambda m: m.raw_data.startswith(b"<"))
def pages(message, ctx):
    raise ValueError(message.raw_data.decode())
"""

#: A payload, an attribute and (through ``pages``) a reason that would run if a
#: page wrote them unescaped.
SCRIPT = b"<script>alert(1)</script>"


@dataclass
class Shop:
    """The module written for a test, its processor and the DLQ it filled."""

    directory: Path
    module: ModuleType
    dlq: Path

    @property
    def processor(self) -> missive.Processor[missive.RawMessage]:
        """The module's processor."""
        processor: missive.Processor[missive.RawMessage] = self.module.processor
        return processor

    def fail(self, payload: bytes, message_id: str, **attributes: object) -> None:
        """Process a message that its handler dead-letters into :attr:`dlq`."""
        with SQLiteDLQ(self.dlq) as dlq:
            self.processor.set_dlq(dlq)
            try:
                with self.processor.context() as ctx:
                    message = missive.RawMessage(payload, message_id.encode(), attributes)
                    ctx.process(message)
            finally:
                self.processor.set_dlq(None)

    def fix(self) -> None:
        """Make the ``orders`` handler work."""
        (self.directory / "fixed").touch()


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shop:
    """A fresh processor module in ``tmp_path`` and an empty DLQ there."""
    name = f"console_shop_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(SHOP)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    path = tmp_path / "dlq.db"
    SQLiteDLQ(path).close()
    return Shop(tmp_path, module, path)
