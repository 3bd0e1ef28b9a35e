"""``missive dlq serve`` run as a user runs it: a real server, fetched with urllib,
stopped with SIGTERM."""

from __future__ import annotations

import importlib.util
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.cli.conftest import CLI, assert_one_line_error
from tests.console.conftest import SCRIPT, Shop

SERVERS = [
    "wsgiref",
    pytest.param(
        "gunicorn",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("gunicorn") is None, reason="gunicorn is not installed"
        ),
    ),
]


def free_port() -> int:
    """A TCP port nothing listens on, on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def fetch(url: str) -> tuple[int, str]:
    """GET ``url``: its status and body."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode("utf-8")


def wait_until_up(process: subprocess.Popen[bytes], url: str) -> None:
    """Wait (at most 20 s) until ``url`` answers, failing if the server exited."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            fetch(url)
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer")


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    """The command, run in this test's own directory."""
    return CLI(tmp_path)


@pytest.mark.parametrize("server", SERVERS)
def test_serve_answers_pages_and_stops_on_sigterm_with_status_0(
    shop: Shop, cli: CLI, server: str
) -> None:
    shop.fail(SCRIPT, "p<1>")
    port = free_port()
    argv = cli.command("dlq", "serve", "--dlq", str(shop.dlq), "--bind", f"127.0.0.1:{port}")
    process = subprocess.Popen(
        [*argv, "--server", server], cwd=shop.directory, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, url + "/")
        status, body = fetch(url + "/letters")
        letter_status, letter = fetch(url + "/letter?id=p%3C1%3E")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert status == 200
    assert 'value="p&lt;1&gt;"' in body
    assert letter_status == 200
    assert "<script" not in letter.lower()
    assert process.returncode == 0
    assert f"served by {server}" in err.decode()
    assert "Traceback" not in err.decode()


def test_serve_refuses_a_host_other_than_loopback(shop: Shop, cli: CLI) -> None:
    port = free_port()
    argv = cli.command("dlq", "serve", "--dlq", str(shop.dlq), "--bind", f"127.0.0.1:{port}")
    process = subprocess.Popen(
        [*argv, "--server", "wsgiref"], cwd=shop.directory, stderr=subprocess.DEVNULL
    )
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}/")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/", headers={"Host": "attacker.example"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        refused.value.close()
        assert refused.value.code == 403
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_binding_beyond_loopback_warns_there_is_no_authentication(shop: Shop, cli: CLI) -> None:
    port = free_port()
    argv = cli.command("dlq", "serve", "--dlq", str(shop.dlq), "--bind", f"0.0.0.0:{port}")
    process = subprocess.Popen(
        [*argv, "--server", "wsgiref"], cwd=shop.directory, stderr=subprocess.PIPE
    )
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}/")
    finally:
        process.terminate()
        _, err = process.communicate(timeout=20)
    assert "missive: warning: " in err.decode()
    assert "no authentication" in err.decode()


def test_a_missing_dlq_is_one_line_error(cli: CLI, tmp_path: Path) -> None:
    result = cli("dlq", "serve", "--dlq", str(tmp_path / "nope.db"), "--bind", "127.0.0.1:1")

    assert_one_line_error(result, "does not exist")
    assert result.returncode == 1


def test_processor_and_broker_together_are_one_line_error(shop: Shop, cli: CLI) -> None:
    result = cli(
        "dlq",
        "serve",
        "--dlq",
        str(shop.dlq),
        "--processor",
        "shop:processor",
        "--broker-url",
        "amqp://127.0.0.1",
    )

    assert_one_line_error(result, "not both")


def test_a_bad_bind_is_a_usage_error(shop: Shop, cli: CLI) -> None:
    result = cli("dlq", "serve", "--dlq", str(shop.dlq), "--bind", "localhost")

    assert_one_line_error(result, "--bind", "HOST:PORT")
    assert result.returncode == 2


@pytest.mark.parametrize("server", ["wsgiref", "gunicorn"])
def test_a_port_in_use_is_one_line_error(shop: Shop, cli: CLI, server: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(
            "dlq",
            "serve",
            "--dlq",
            str(shop.dlq),
            "--bind",
            f"127.0.0.1:{port}",
            "--server",
            server,
        )

    assert_one_line_error(result, "cannot listen on")
