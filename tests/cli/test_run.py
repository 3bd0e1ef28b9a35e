"""``missive run``: an adapter in this process, or supervised worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli._apps import DIRECTORY_QUEUE, HELLO, SHOP, write_app
from tests.cli.conftest import CLI, assert_one_line_error, clean_env
from tests.services import require


def test_run_feeds_a_pipe_to_the_quickstarts_stdin_adapter(cli: CLI, tmp_path: Path) -> None:
    write_app(tmp_path, "hello", HELLO)

    result = cli("run", "hello:stdin_processor", input="Hello\nHello\n")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello whoever you are\n" * 2
    assert "stopped after 2 lines" in result.stderr


def test_the_console_script_is_installed(tmp_path: Path) -> None:
    write_app(tmp_path, "hello", HELLO)
    script = Path(sys.executable).parent / "missive"

    done = subprocess.run(
        [str(script), "run", "hello:stdin_processor"],
        cwd=tmp_path, env=clean_env(), input=b"Hello\n", capture_output=True, timeout=30,
    )  # fmt: skip

    assert done.returncode == 0
    assert done.stdout == b"Hello whoever you are\n"


def test_run_calls_a_factory_and_runs_the_processing_hooks(cli: CLI, tmp_path: Path) -> None:
    write_app(tmp_path, "shop", SHOP)

    result = cli("run", "shop:adapter", input='{"kind": "refund"}\n')

    assert result.returncode == 0, result.stderr
    hooks = [line.split()[0] for line in (tmp_path / "hooks.log").read_text().splitlines()]
    assert hooks == ["before", "after"]


def test_a_message_that_cannot_be_handled_without_a_dlq_exits_non_zero(
    cli: CLI, tmp_path: Path
) -> None:
    write_app(tmp_path, "hello", HELLO)

    result = cli("run", "hello:stdin_processor", "--log-level", "error", input="Bye\n")

    assert_one_line_error(result, "StdinAdapter stopped", "no handler matched")


def test_a_target_that_is_not_an_adapter_is_an_error(cli: CLI, tmp_path: Path) -> None:
    write_app(tmp_path, "hello", HELLO)

    result = cli("run", "hello:processor")

    assert_one_line_error(result, "'hello:processor' is Processor", "not a missive.Adapter")


def test_a_wrong_import_path_is_an_error(cli: CLI, tmp_path: Path) -> None:
    write_app(tmp_path, "hello", HELLO)

    result = cli("run", "hello:stdin_procesor")

    assert_one_line_error(result, "'hello' has no attribute 'stdin_procesor'", "PYTHONPATH")


# --- workers ------------------------------------------------------------------------------


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 20) -> None:
    """Wait until ``condition()`` holds; fail saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


class Workers:
    """``missive run dirqueue:adapter --workers 2`` running in ``directory``."""

    def __init__(self, directory: Path, target: str = "dirqueue:adapter") -> None:
        self.directory = directory
        self.log_path = directory / "supervisor.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                CLI(directory).command("run", target, "--workers", "2", "--graceful-timeout", "10"),
                cwd=directory, env=clean_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip

    @property
    def log(self) -> str:
        """What the supervisor and workers wrote so far."""
        return self.log_path.read_text(errors="replace")

    def pids(self, state: str) -> set[int]:
        """The pids of the workers that ran their ``started`` or ``stopped`` hook."""
        folder = self.directory / state
        return {int(p.name) for p in folder.iterdir()} if folder.exists() else set()

    def send(self, name: str) -> Path:
        """Drop a message in the inbox; returns where its handler records it."""
        draft = self.directory / "inbox" / f".{name}"
        draft.write_bytes(name.encode())
        draft.rename(self.directory / "inbox" / f"{name}.msg")
        return self.directory / "done" / name


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Two workers serving a directory, both started; stopped after the test."""
    write_app(tmp_path, "dirqueue", DIRECTORY_QUEUE)
    running = Workers(tmp_path)
    try:
        wait_for("two workers to start", lambda: len(running.pids("started")) == 2)
        yield running
    finally:
        if running.process.poll() is None:
            running.process.send_signal(signal.SIGTERM)
            try:
                running.process.wait(20)
            except subprocess.TimeoutExpired:
                running.process.kill()
                running.process.wait()


def test_workers_serve_messages(workers: Workers) -> None:
    done = workers.send("m1")

    wait_for("the message to be handled", done.exists)
    assert int(done.read_text()) in workers.pids("started")


def test_a_killed_worker_is_restarted_and_its_exit_status_logged(workers: Workers) -> None:
    # Given two running workers, when one is killed with SIGKILL
    victim = min(workers.pids("started"))
    os.kill(victim, signal.SIGKILL)

    # Then the supervisor logs it with its exit status, and a new worker starts
    wait_for(
        "the death to be logged", lambda: f"(pid {victim}) was killed by SIGKILL" in workers.log
    )
    wait_for("a third worker to start", lambda: len(workers.pids("started")) == 3)
    assert "restarting it" in workers.log
    # And messages are still handled
    done = workers.send("after-restart")
    wait_for("the message to be handled", done.exists)
    assert int(done.read_text()) != victim


def test_sigterm_stops_every_worker_gracefully(workers: Workers) -> None:
    started = workers.pids("started")

    workers.process.send_signal(signal.SIGTERM)

    # Then the supervisor exits 0 once each worker ran its after_processing hooks
    assert workers.process.wait(20) == 0
    assert workers.pids("stopped") == started
    for pid in started:
        assert f"(pid {pid}) stopped" in workers.log
    assert "Traceback" not in workers.log


def test_workers_stop_gracefully_when_the_supervisor_is_killed(workers: Workers) -> None:
    started = workers.pids("started")

    workers.process.kill()
    workers.process.wait()

    wait_for("every worker to stop", lambda: workers.pids("stopped") == started)


def test_workers_that_cannot_load_the_adapter_stop_the_supervisor(tmp_path: Path) -> None:
    write_app(tmp_path, "dirqueue", DIRECTORY_QUEUE)

    running = Workers(tmp_path, target="dirqueue:no_such_adapter")

    assert running.process.wait(20) == 1
    assert "'dirqueue' has no attribute 'no_such_adapter'" in running.log
    assert "could not load dirqueue:no_such_adapter" in running.log
    assert "restarting" not in running.log
    assert "Traceback" not in running.log


def test_the_stop_error_names_the_input_line_to_resume_from(cli: CLI, tmp_path: Path) -> None:
    # Given the quickstart's stdin adapter, with no DLQ, and a second line nobody handles
    write_app(tmp_path, "hello", HELLO)

    # When it runs under missive run
    result = cli("run", "hello:stdin_processor", "--log-level", "error", input="Hello\nBye\n")

    # Then its one error line says which line failed and where to resume
    assert_one_line_error(result, "StdinAdapter stopped", "input line 2", "resume from line 2")


def test_workers_on_stdin_are_refused_with_an_error_and_not_restarted(
    cli: CLI, tmp_path: Path
) -> None:
    write_app(tmp_path, "hello", HELLO)

    result = cli("run", "hello:stdin_processor", "--workers", "2", input="Hello\n" * 10)

    assert result.returncode == 1
    assert "cannot be shared by several worker processes" in result.stderr
    assert "run it without --workers" in result.stderr
    assert "restarting" not in result.stderr
    assert "Traceback" not in result.stderr


FINISHING = """
import missive


class Once(missive.Adapter):
    def run(self):
        pass  # its input is done at once


adapter = Once(missive.RawMessage, missive.Processor())
"""

EXITING = """
import sys

sys.exit(3)
"""

MISSING_QUEUE = """
import os

import missive
from missive.adapters.rabbitmq import RabbitMQAdapter

adapter = RabbitMQAdapter(missive.RawMessage, missive.Processor(), os.environ["TEST_QUEUE"])
"""


def test_workers_that_finish_on_their_own_are_not_restarted(cli: CLI, tmp_path: Path) -> None:
    write_app(tmp_path, "once", FINISHING)

    result = cli("run", "once:adapter", "--workers", "2")

    assert result.returncode == 0, result.stderr
    assert result.stderr.count("finished on its own; not restarted") == 2
    assert "restarting" not in result.stderr


def test_a_module_that_exits_at_import_stops_the_supervisor_with_one_line(
    cli: CLI, tmp_path: Path
) -> None:
    write_app(tmp_path, "exiting", EXITING)

    result = cli("run", "exiting:adapter", "--workers", "2")

    assert result.returncode == 1
    assert "importing it called sys.exit(3)" in result.stderr
    assert "could not load exiting:adapter" in result.stderr
    assert "restarting" not in result.stderr
    assert "Traceback" not in result.stderr


def test_workers_that_keep_failing_at_start_stop_the_supervisor(cli: CLI, tmp_path: Path) -> None:
    # Given a RabbitMQ adapter on a queue that does not exist
    require("rabbitmq")
    write_app(tmp_path, "missing", MISSING_QUEUE)
    queue = f"missive-test-missing-{os.urandom(4).hex()}"

    # When it is run by two workers
    result = cli("run", "missing:adapter", "--workers", "2", env={"TEST_QUEUE": queue}, timeout=60)

    # Then the supervisor gives up after three failed starts of a worker, each failure
    # one ERROR line without a traceback, and pika says nothing
    assert result.returncode == 1
    assert "failed before consuming, the 3rd time in a row" in result.stderr
    assert "stopping all" in result.stderr
    failures = [line for line in result.stderr.splitlines() if "RabbitMQAdapter stopped" in line]
    assert failures, result.stderr
    assert all(queue in line for line in failures)
    assert "Traceback" not in result.stderr
    assert " pika" not in result.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--workers", "\u0663"),
        ("--workers", "100000000"),
        ("--workers", "0"),
        ("--graceful-timeout", "nan"),
        ("--graceful-timeout", "inf"),
        ("--graceful-timeout", "-1"),
        ("--graceful-timeout", "1e999"),
    ],
)
def test_a_bad_run_option_is_one_error_line_and_status_2(
    cli: CLI, tmp_path: Path, option: str, value: str
) -> None:
    write_app(tmp_path, "hello", HELLO)

    result = cli("run", "hello:stdin_processor", option, value)

    assert result.returncode == 2
    assert_one_line_error(result, option)


#: Lines handled on four threads at once: each handler waits until four are running.
CONCURRENT = """
import threading

import missive
from missive.adapters.stdin import StdinAdapter

processor = missive.Processor()
running = threading.Barrier(4, timeout=10)
printing = threading.Lock()

@processor.handle_for(lambda m: True)
def handle(message, ctx):
    running.wait()
    with printing:
        print(message.raw_data.decode(), flush=True)
    ctx.ack()

adapter = StdinAdapter(missive.RawMessage, processor)
"""


def test_concurrency_sets_how_many_messages_a_process_handles_at_once(
    cli: CLI, tmp_path: Path
) -> None:
    # Given handlers that each wait until four run at once (or fail after 10 s)
    write_app(tmp_path, "parallel", CONCURRENT)
    # When eight lines are run with --concurrency 4
    result = cli("run", "parallel:adapter", "--concurrency", "4", input="1\n2\n3\n4\n5\n6\n7\n8\n")
    # Then all were handled: four at a time
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == [str(n) for n in range(1, 9)]


@pytest.mark.parametrize("bad", ["0", "-2", "many", "1.5"])
def test_a_bad_concurrency_is_one_line_and_status_2(cli: CLI, tmp_path: Path, bad: str) -> None:
    write_app(tmp_path, "hello", HELLO)
    result = cli("run", "hello:stdin_processor", "--concurrency", bad)
    assert result.returncode == 2
    assert_one_line_error(result, "--concurrency", "whole number")
