"""The test client: the in-memory double for adapters; the conformance package's imports."""

import asyncio
import subprocess
import sys
from typing import Any

import pytest

import missive

Ctx = missive.HandlingContext[Any]


def counting_processor(events: list[str]) -> missive.Processor[missive.Message]:
    processor = missive.Processor()
    processor.before_processing(lambda p: events.append("start"))
    processor.after_processing(lambda p: events.append("stop"))
    processor.handle_for(lambda m: True)(lambda m, ctx: ctx.ack())
    return processor


def test_before_processing_runs_once_before_the_first_message() -> None:
    events: list[str] = []
    client = counting_processor(events).test_client()
    assert events == []
    client.send(missive.RawMessage(b"1"))
    client.send(missive.RawMessage(b"2"))
    assert events == ["start"]


def test_close_runs_after_processing_once() -> None:
    events: list[str] = []
    client = counting_processor(events).test_client()
    client.send(missive.RawMessage(b"1"))
    client.close()
    client.close()
    assert events == ["start", "stop"]


def test_as_a_context_manager_the_hooks_bracket_the_block() -> None:
    events: list[str] = []
    with counting_processor(events).test_client() as client:
        assert events == ["start"]
        client.send(missive.RawMessage(b"1"))
    assert events == ["start", "stop"]


def test_a_closed_client_refuses_messages() -> None:
    client = counting_processor([]).test_client()
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.send(missive.RawMessage(b"1"))


def test_closing_an_unused_client_runs_no_hooks() -> None:
    events: list[str] = []
    counting_processor(events).test_client().close()
    assert events == []


def run_python(program: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)


def test_importing_missive_and_its_test_client_never_imports_pytest() -> None:
    result = run_python(
        "import sys\n"
        "import missive, missive.testing\n"
        "from missive.testing import TestClient\n"
        "assert TestClient is missive.TestClient\n"
        "assert 'pytest' not in sys.modules, 'pytest was imported'\n"
    )
    assert result.returncode == 0, result.stderr


def test_the_conformance_suites_without_pytest_raise_missing_extra_testing() -> None:
    result = run_python(
        "import sys\n"
        "sys.modules['pytest'] = None  # as if pytest were not installed\n"
        "import missive\n"
        "try:\n"
        "    import missive.testing.conformance\n"
        "except missive.MissingExtraError as exc:\n"
        "    print(exc.extra, '|', exc)\n"
    )
    assert result.returncode == 0, result.stderr
    extra, message = result.stdout.strip().split(" | ")
    assert extra == "testing"
    assert "pip install 'missive[testing]'" in message


def test_the_conformance_package_exports_its_public_names() -> None:
    import missive.testing.conformance as conformance

    assert {"AdapterSuite", "MappingSuite", "StoreSuite", "Harness", "MemoryHarness"} <= set(
        conformance.__all__
    )
    assert all(hasattr(conformance, name) for name in conformance.__all__)


def async_processor() -> tuple[missive.Processor[missive.RawMessage], list[str]]:
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    events: list[str] = []

    @processor.before_handling
    async def before(pctx: Any, hctx: Any) -> None:
        events.append("before")

    @processor.after_handling
    def after(pctx: Any, hctx: Any) -> None:
        events.append("after")

    @processor.handle_for(lambda m: m.raw_data == b"ok")
    async def ok(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        await asyncio.sleep(0)
        events.append("handled")
        ctx.ack()

    @processor.handle_for(lambda m: m.raw_data == b"bad")
    async def bad(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        raise ValueError("bad")

    processor.set_dlq({})
    return processor, events


def test_send_drives_async_handlers_and_hooks_to_completion() -> None:
    processor, events = async_processor()
    with processor.test_client() as client:
        assert client.send(missive.RawMessage(b"ok")) is missive.Outcome.ACKED
        assert client.send(missive.RawMessage(b"bad")) is missive.Outcome.DEAD_LETTERED
    assert events == ["before", "handled", "after", "before", "after"]
    assert [m.raw_data for m in client.dead_lettered] == [b"bad"]


def test_asend_awaits_async_handlers_on_the_tests_own_loop() -> None:
    processor, events = async_processor()

    async def scenario() -> list[missive.Outcome]:
        with processor.test_client() as client:
            return [
                await client.asend(missive.RawMessage(b"ok")),
                await client.asend(missive.RawMessage(b"bad")),
            ]

    assert asyncio.run(scenario()) == [missive.Outcome.ACKED, missive.Outcome.DEAD_LETTERED]
    assert events == ["before", "handled", "after", "before", "after"]
