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

from missive.console.access import TOKEN_VARIABLE
from tests.cli.conftest import CLI, assert_one_line_error, clean_env
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


#: The token the servers of these tests take from the environment.
TOKEN = "test-token-" + "x" * 21


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET ``url`` with the test's token as a bearer (unless ``headers``): status, body."""
    given = {"Authorization": f"Bearer {TOKEN}"} if headers is None else headers
    request = urllib.request.Request(url, headers=given)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode("utf-8")


def start(cli: CLI, shop: Shop, *args: str, token: str | None = TOKEN) -> subprocess.Popen[bytes]:
    """``missive dlq serve --dlq`` the shop's DLQ ``args``, its token from the
    environment (or made by the server if ``token`` is None), stderr piped."""
    env = clean_env()
    env.pop(TOKEN_VARIABLE, None)
    if token is not None:
        env[TOKEN_VARIABLE] = token
    argv = cli.command("dlq", "serve", "--dlq", str(shop.dlq), *args)
    return subprocess.Popen(argv, cwd=shop.directory, env=env, stderr=subprocess.PIPE)


def stop(process: subprocess.Popen[bytes]) -> str:
    """SIGTERM the server; what it wrote on stderr."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return err.decode()


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
    process = start(cli, shop, "--bind", f"127.0.0.1:{port}", "--server", server)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, url + "/")
        status, body = fetch(url + "/letters")
        letter_status, letter = fetch(url + "/letter?id=p%3C1%3E")
    finally:
        err = stop(process)

    assert status == 200
    assert 'value="p&lt;1&gt;"' in body
    assert letter_status == 200
    assert "<script" not in letter.lower()
    assert process.returncode == 0
    assert f"served by {server}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("server", SERVERS)
def test_a_made_token_is_printed_once_in_the_address_to_open(
    shop: Shop, cli: CLI, server: str
) -> None:
    port = free_port()
    process = start(cli, shop, "--bind", f"127.0.0.1:{port}", "--server", server, token=None)
    assert process.stderr is not None
    try:
        line = process.stderr.readline().decode()
        while "?token=" not in line and line:
            line = process.stderr.readline().decode()
        address = line.split("open ", 1)[1].strip()
        token = address.split("?token=", 1)[1]
        wait_until_up(process, f"http://127.0.0.1:{port}/")
        without = fetch(f"http://127.0.0.1:{port}/", headers={})
        wrong = fetch(f"http://127.0.0.1:{port}/?token={token[:-1]}x", headers={})
        request = urllib.request.Request(address)
        with urllib.request.urlopen(request, timeout=10) as response:
            opened, cookie = response.status, response.headers["Set-Cookie"]
        fetch(f"http://127.0.0.1:{port}/letters?token={token}", headers={})
    finally:
        err = line + stop(process)

    assert address.startswith(f"http://127.0.0.1:{port}/?token=")
    assert len(token) >= 32
    assert without[0] == 401
    assert wrong[0] == 401
    assert opened == 200
    assert cookie.startswith(f"missive_console_{port}={token};")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert err.count(token) == 1, err


def test_the_token_from_the_environment_is_used_and_never_printed(shop: Shop, cli: CLI) -> None:
    port = free_port()
    process = start(cli, shop, "--bind", f"127.0.0.1:{port}", "--server", "wsgiref")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, url + "/")
        with_it = fetch(f"{url}/?token={TOKEN}", headers={})
        made_up = fetch(f"{url}/?token=test-token-{'y' * 21}", headers={})
        by_header = fetch(url + "/letters")
    finally:
        err = stop(process)

    assert with_it[0] == 200
    assert made_up[0] == 401
    assert by_header[0] == 200
    assert TOKEN not in err
    assert "MISSIVE_CONSOLE_TOKEN" in err


def test_a_short_token_in_the_environment_is_one_line_error(shop: Shop, cli: CLI) -> None:
    result = cli("dlq", "serve", "--dlq", str(shop.dlq), env={TOKEN_VARIABLE: "short"})

    assert_one_line_error(result, TOKEN_VARIABLE, "at least 16")
    assert "short" not in result.stderr.replace(TOKEN_VARIABLE, "")


def test_serve_refuses_a_host_other_than_loopback(shop: Shop, cli: CLI) -> None:
    port = free_port()
    process = start(cli, shop, "--bind", f"127.0.0.1:{port}", "--server", "wsgiref")
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}/")
        status, _ = fetch(
            f"http://127.0.0.1:{port}/",
            headers={"Host": "attacker.example", "Authorization": f"Bearer {TOKEN}"},
        )
    finally:
        stop(process)
    assert status == 403


def test_binding_beyond_loopback_warns_the_token_crosses_in_clear(shop: Shop, cli: CLI) -> None:
    port = free_port()
    process = start(cli, shop, "--bind", f"0.0.0.0:{port}", "--server", "wsgiref")
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}/")
    finally:
        err = stop(process)
    assert "missive: warning: " in err
    assert "in clear" in err


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
