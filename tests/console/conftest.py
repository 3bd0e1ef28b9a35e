"""Fixtures and helpers of the console tests: a real SQLite DLQ filled by a processor whose
handlers fail, from a module written into the test's directory."""

from __future__ import annotations

import importlib
import io
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import pytest

import missive
from missive.console import Console, Replayer
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


@dataclass
class Response:
    """What the application answered."""

    status: int
    headers: dict[str, str]
    body: str


def call(
    console: Console,
    path: str,
    query: dict[str, str] | None = None,
    *,
    form: list[tuple[str, str]] | None = None,
    host: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> Response:
    """One request: a GET, or a POST of ``form``.

    It carries the console's token in the cookie, unless ``headers`` (CGI names,
    ``HTTP_COOKIE``...) are given: then it carries those instead.
    """
    data = urlencode(form or []).encode()
    environ: dict[str, object] = {
        "PATH_INFO": path,
        "QUERY_STRING": urlencode(query or {}),
        "REQUEST_METHOD": "POST" if form is not None else "GET",
        "HTTP_HOST": host,
        "SERVER_PORT": "80",
    }
    if headers is None:
        environ["HTTP_COOKIE"] = f"missive_console_80={console.token}"
    else:
        environ.update(headers)
    if form is not None:
        environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
        environ["CONTENT_LENGTH"] = str(len(data))
        environ["wsgi.input"] = io.BytesIO(data)
    setup_testing_defaults(environ)
    answered: dict[str, object] = {}

    def start_response(status: str, sent: list[tuple[str, str]]) -> None:
        answered["status"] = int(status.split()[0])
        answered["headers"] = dict(sent)

    body = b"".join(console(environ, start_response)).decode("utf-8")
    return Response(answered["status"], answered["headers"], body)  # type: ignore[arg-type]


def console_of(shop: Shop, *, replay: bool = False) -> Console:
    """A console over the shop's DLQ, replaying through its processor if ``replay``."""
    replayer = Replayer(shop.processor) if replay else None
    return Console(str(shop.dlq), replayer=replayer, hosts=["127.0.0.1", "localhost"])


def ids(shop: Shop, **filters: object) -> list[bytes]:
    """The ids in the shop's DLQ."""
    with SQLiteDLQ(shop.dlq) as dlq:
        return [letter.message_id for letter in dlq.records(**filters)]  # type: ignore[arg-type]


def history(shop: Shop) -> list[tuple[str, int, str, str]]:
    """The audit entries, newest first: operation, count, user, outcome."""
    with SQLiteDLQ(shop.dlq) as dlq:
        return [(e.operation, e.count, e.user, e.outcome) for e in dlq.history()]


@pytest.fixture
def filled(shop: Shop) -> Shop:
    """Two failed orders and one page whose payload, attribute and reason are scripts."""
    shop.fail(b"order 1", "o1")
    shop.fail(b"order 2", "o2")
    shop.fail(SCRIPT, "p<1>", note=SCRIPT.decode())
    return shop
