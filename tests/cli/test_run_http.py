"""``missive run --http``, ``--log-format`` and ``--handler-timeout``: options and errors.

The probes through a broker restart and a drain are in tests/observability/.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.cli._apps import HELLO, write_app
from tests.cli.conftest import CLI, assert_one_line_error


@pytest.mark.parametrize("value", ["8000", "localhost", "127.0.0.1:99999", "[::1]8000", "a:b"])
def test_an_http_address_that_does_not_parse_is_a_usage_error(
    cli: CLI, tmp_path: Path, value: str
) -> None:
    write_app(tmp_path, "hello", HELLO)

    result = cli("run", "hello:stdin_processor", "--http", value)

    assert result.returncode == 2
    assert_one_line_error(result, "argument --http: must be HOST:PORT", repr(value))


def test_an_http_port_in_use_is_a_one_line_error(cli: CLI, tmp_path: Path) -> None:
    write_app(tmp_path, "hello", HELLO)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = cli("run", "hello:stdin_processor", "--http", f"127.0.0.1:{port}")

    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("missive: error:")]
    expected = f"missive: error: cannot serve --http on 127.0.0.1:{port}: Address already in use"
    assert lines == [expected]
    assert "Traceback" not in result.stderr


def test_a_port_in_use_stops_the_supervisor_before_any_worker_starts(
    cli: CLI, tmp_path: Path
) -> None:
    write_app(tmp_path, "hello", HELLO)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = cli(
            "run", "hello:stdin_processor", "--workers", "2", "--http", f"127.0.0.1:{port}"
        )

    assert_one_line_error(result, f"cannot serve --http on 127.0.0.1:{port}")
    assert result.returncode == 1


def test_the_http_server_runs_beside_an_adapter_until_its_input_ends(
    cli: CLI, tmp_path: Path
) -> None:
    write_app(tmp_path, "hello", HELLO)

    result = cli("run", "hello:stdin_processor", "--http", "127.0.0.1:0", input="Hello\n")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello whoever you are\n"
    assert "serving /healthz, /readyz and /metrics on http://127.0.0.1:" in result.stderr


def test_json_logs_are_one_object_a_line(cli: CLI, tmp_path: Path) -> None:
    write_app(tmp_path, "hello", HELLO)

    result = cli("run", "hello:stdin_processor", "--log-format", "json", input="Hello\n")

    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records
    assert {"time", "level", "logger", "message", "pid"} <= set(records[0])
    assert records[0]["logger"] == "missive.cli.run"


def test_text_logs_are_the_default(cli: CLI, tmp_path: Path) -> None:
    write_app(tmp_path, "hello", HELLO)

    result = cli("run", "hello:stdin_processor", input="Hello\n")

    assert result.returncode == 0, result.stderr
    assert " INFO missive.cli.run: running StdinAdapter" in result.stderr.splitlines()[0]


@pytest.mark.parametrize(
    ("option", "value"), [("--log-format", "xml"), ("--handler-timeout", "-1")]
)
def test_bad_values_are_usage_errors(cli: CLI, tmp_path: Path, option: str, value: str) -> None:
    write_app(tmp_path, "hello", HELLO)

    result = cli("run", "hello:stdin_processor", option, value)

    assert result.returncode == 2
    assert_one_line_error(result, f"argument {option}")
