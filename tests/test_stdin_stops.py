"""The stdin adapter stopped by real signals mid-stream: every line is handled,
dead-lettered or left unread, once.

Each run is a real program reading a real pipe or regular file, stopped at a
random moment; the test then counts what was handled (a file the handler
appends to), dead-lettered (an SQLite DLQ: every tenth line is nacked) and left
unread (what remains in the pipe, or after the file's offset).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from missive.dlq.sqlite import SQLiteDLQ

RUNS = 20
LINES = [b"%s-%05d" % (b"x" * (i % 60), i) for i in range(2000)]
INPUT = b"".join(line + b"\n" for line in LINES)

PROGRAM = """
import sys, time, missive
from missive.adapters.stdin import StdinAdapter
from missive.dlq.sqlite import SQLiteDLQ

processor = missive.Processor()
processor.set_dlq(SQLiteDLQ(sys.argv[1]))
handled = open(sys.argv[2], "ab", buffering=0)

@processor.handle_for(lambda m: True)
def record(message, ctx):
    time.sleep(0.0002)
    if message.raw_data.endswith(b"7"):
        ctx.nack()  # dead-lettered: stdin cannot redeliver
        return
    handled.write(message.raw_data + b"\\n")
    ctx.ack()

processor.before_processing(lambda p: print("ready", flush=True))
StdinAdapter(missive.RawMessage, processor).run()
"""


@dataclass
class Run:
    """What one stopped run did with the input."""

    handled: list[bytes]
    dead_lettered: list[bytes]
    unread: list[bytes]


def start(directory: Path, stdin: int | IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", PROGRAM, str(directory / "dlq.db"), str(directory / "handled")],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def stop_at_random(program: subprocess.Popen[bytes], signum: int, rng: random.Random) -> None:
    """Wait until it reads, then send ``signum`` at a random moment; it must exit 0."""
    assert program.stdout is not None
    assert program.stdout.readline() == b"ready\n"
    threading.Event().wait(rng.uniform(0.0, 0.4))
    program.send_signal(signum)
    _, err = program.communicate(timeout=60)
    assert program.returncode == 0, err.decode()


def outcome(directory: Path, unread: bytes) -> Run:
    handled = (directory / "handled").read_bytes().splitlines()
    with SQLiteDLQ(directory / "dlq.db") as dlq:
        dead = [record.message.raw_data for record in dlq.records()]
    return Run(handled, dead, unread.splitlines())


def run_on_a_pipe(directory: Path, signum: int, rng: random.Random) -> Run:
    read_end, write_end = os.pipe()

    def write_all() -> None:
        with os.fdopen(write_end, "wb") as writer:
            writer.write(INPUT)

    writer = threading.Thread(target=write_all)
    writer.start()
    try:
        program = start(directory, read_end)
        stop_at_random(program, signum, rng)
    finally:
        # What the program did not take stays in the pipe: drain it.
        with os.fdopen(read_end, "rb") as rest:
            unread = rest.read()
        writer.join()
    return outcome(directory, unread)


def run_on_a_file(directory: Path, signum: int, rng: random.Random) -> Run:
    path = directory / "input"
    path.write_bytes(INPUT)
    with open(path, "rb") as shared:  # the program's stdin shares this offset
        program = start(directory, shared)
        stop_at_random(program, signum, rng)
        offset = os.lseek(shared.fileno(), 0, os.SEEK_CUR)
    return outcome(directory, INPUT[offset:])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("run_once", [run_on_a_pipe, run_on_a_file], ids=["pipe", "file"])
def test_a_stop_at_any_moment_handles_dead_letters_or_leaves_unread_every_line_once(
    tmp_path: Path, run_once: Callable[[Path, int, random.Random], Run], signum: int
) -> None:
    # Given 2,000 lines on stdin and a handler that nacks every tenth
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    directories = [tmp_path / str(n) for n in range(RUNS)]
    for directory in directories:
        directory.mkdir()

    # When each of 20 runs is stopped by the signal at a random moment
    seeds = [rng.random() for _ in directories]
    with ThreadPoolExecutor(max_workers=2) as pool:
        stopped = pool.map(lambda d, s: run_once(d, signum, random.Random(s)), directories, seeds)
        runs = list(stopped)

    # Then each line was handled, dead-lettered or left unread, exactly once
    for number, run in enumerate(runs):
        seen = Counter(run.handled + run.dead_lettered + run.unread)
        assert seen == Counter(LINES), (
            f"run {number} (seed {seed}): {len(run.handled)} handled, "
            f"{len(run.dead_lettered)} dead-lettered, {len(run.unread)} unread, "
            f"missing {len(set(LINES) - set(seen))}, "
            f"duplicated {sum(1 for c in seen.values() if c > 1)}, "
            f"unexpected {len(set(seen) - set(LINES))}"
        )
        assert all(line.endswith(b"7") for line in run.dead_lettered)
    # And the stops did land mid-stream, not only before or after the input
    assert any(0 < len(run.handled) < len(LINES) * 0.9 and run.unread for run in runs), seed
