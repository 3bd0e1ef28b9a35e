"""``missive dlq replay`` at scale: deletes in batches, ``--rate``, stop and resume, progress.

The processor is ``fast.py`` in the test's directory: its one handler logs each
message's ``n`` to ``handled.log`` and acks, except that it raises for the numbers
in ``$FAIL``, kills its process at ``$EXIT_AT`` (before logging it) and sends its
process ``$SIG`` at ``$STOP_AT`` (after logging it).
"""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import missive
from missive.cli._replay_loop import Deletes
from missive.cli._replay_pace import RateLimit, ReplayProgress, parse_rate
from missive.dlq import DeadLetterStore
from missive.dlq.sqlite import SQLiteDLQ
from tests.cli._apps import write_app
from tests.cli.conftest import CLI, Result, assert_one_line_error, clean_env
from tests.services import require

FAST = """
import os
import signal
from pathlib import Path

import missive

HERE = Path(__file__).parent
FAIL = {int(n) for n in os.environ.get("FAIL", "").split(",") if n}
EXIT_AT = int(os.environ.get("EXIT_AT", "-1"))
STOP_AT = int(os.environ.get("STOP_AT", "-1"))
processor: missive.Processor[missive.JSONMessage] = missive.Processor()
log = open(HERE / "handled.log", "a", buffering=1)


@processor.handle_for(lambda m: True)
def handle(message, ctx):
    n = message.get_json()["n"]
    if n in FAIL:
        raise RuntimeError("broken")
    if n == EXIT_AT:
        os._exit(3)
    log.write(f"{n}\\n")
    if n == STOP_AT:
        os.kill(os.getpid(), getattr(signal, os.environ["SIG"]))
    ctx.ack()
"""

DSN = os.environ.get("MISSIVE_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/test")


def letter_id(n: int) -> bytes:
    return b"m-%05d" % n


def fill(dlq: DeadLetterStore, count: int) -> None:
    """Dead-letter ``count`` messages ``{"n": 0}``... oldest first."""
    for n in range(count):
        message = missive.JSONMessage(json.dumps({"n": n}).encode(), letter_id(n), {})
        dlq[message.message_id] = (message, "handler 'handle' raised RuntimeError")


def sqlite_dlq(tmp_path: Path, count: int) -> Path:
    """The processor ``fast`` and an SQLite DLQ of ``count`` letters next to it."""
    write_app(tmp_path, "fast", FAST)
    path = tmp_path / "dlq.db"
    with SQLiteDLQ(path) as dlq:
        fill(dlq, count)
    return path


def remaining(path: Path) -> list[bytes]:
    with SQLiteDLQ(path) as dlq:
        return list(dlq)


def handled(tmp_path: Path) -> list[int]:
    log = tmp_path / "handled.log"
    return [int(n) for n in log.read_text().split()] if log.exists() else []


def replay(cli: CLI, dlq: str, *args: str, env: dict[str, str] | None = None) -> Result:
    return cli("dlq", "replay", "--processor", "fast:processor", "--dlq", dlq, *args, env=env)


@pytest.fixture
def table() -> Iterator[str]:
    """A PostgreSQL table of this test's own, dropped when the test ends."""
    require("postgres")
    psycopg = pytest.importorskip("psycopg")
    name = f"missive_replay_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP TABLE IF EXISTS {}").format(psycopg.sql.Identifier(name))
        )


def test_batched_replay_empties_an_sqlite_dlq(cli: CLI, tmp_path: Path) -> None:
    # Given 250 dead letters, when they are replayed with a commit every 40
    path = sqlite_dlq(tmp_path, 250)
    result = replay(cli, str(path), "--all", "--batch", "40")

    # Then each was handled once, in order, and none is left
    assert result.returncode == 0, result.stderr
    assert "replayed 250 of 250 dead letter(s): 250 handled and removed" in result.stdout
    assert handled(tmp_path) == list(range(250))
    assert remaining(path) == []


def test_batched_replay_empties_a_postgres_table(cli: CLI, tmp_path: Path, table: str) -> None:
    from missive.dlq.postgres import PostgresDLQ

    write_app(tmp_path, "fast", FAST)
    with PostgresDLQ(DSN, table=table) as dlq:
        fill(dlq, 250)
    result = replay(cli, DSN, "--dlq-table", table, "--all", "--batch", "40")
    assert result.returncode == 0, result.stderr
    assert "250 handled and removed" in result.stdout
    assert handled(tmp_path) == list(range(250))
    with PostgresDLQ(DSN, table=table) as dlq:
        assert len(dlq) == 0


def test_delete_many_deletes_those_stored_and_skips_the_rest(tmp_path: Path, table: str) -> None:
    from missive.dlq.postgres import PostgresDLQ

    for store in (SQLiteDLQ(tmp_path / "many.db"), PostgresDLQ(DSN, table=table)):
        with store as dlq:
            fill(dlq, 5)
            ids = [letter_id(1), letter_id(3), b"never-stored", letter_id(3)]
            assert dlq.delete_many(ids) == 2
            assert dlq.delete_many([]) == 0
            assert list(dlq) == [letter_id(0), letter_id(2), letter_id(4)]


def test_handlers_failing_keep_their_letters_and_the_rest_is_removed(
    cli: CLI, tmp_path: Path
) -> None:
    path = sqlite_dlq(tmp_path, 100)
    result = replay(cli, str(path), "--all", "--batch", "7", env={"FAIL": "5,50,99"})
    assert result.returncode == 1, result.stderr
    assert "97 handled and removed, 3 failed again (kept)" in result.stdout
    with SQLiteDLQ(path) as dlq:
        assert {r.message_id: r.times for r in dlq.records()} == {
            letter_id(5): 2,
            letter_id(50): 2,
            letter_id(99): 2,
        }


def test_a_replay_killed_mid_way_keeps_every_letter_since_the_last_commit(
    cli: CLI, tmp_path: Path
) -> None:
    # Given 100 letters, and a handler that kills the process at the 57th
    path = sqlite_dlq(tmp_path, 100)
    result = replay(cli, str(path), "--all", "--batch", "10", env={"EXIT_AT": "57"})
    assert result.returncode == 3

    # Then those from the last commit on are still there (at most one batch handled
    # twice), and every letter was either handled or kept: none lost
    left = remaining(path)
    first = int(left[0][2:])
    assert 50 <= first <= 57
    assert left == [letter_id(n) for n in range(first, 100)]
    assert handled(tmp_path) == list(range(57))

    # And a second run handles the rest
    result = replay(cli, str(path), "--all")
    assert result.returncode == 0, result.stderr
    assert remaining(path) == []
    assert sorted(set(handled(tmp_path))) == list(range(100))


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_stopped_replay_says_how_to_resume_and_resumes(
    cli: CLI, tmp_path: Path, sig: str
) -> None:
    # Given a replay signalled while it handles the 30th of 120 letters
    path = sqlite_dlq(tmp_path, 120)
    result = replay(cli, str(path), "--all", "--batch", "1000", env={"STOP_AT": "30", "SIG": sig})

    # Then it finishes that letter, commits, and says what is left, with status 5
    assert result.returncode == 5, result.stderr
    assert "replayed 31 of 120 dead letter(s): 31 handled and removed" in result.stdout
    assert "89 not replayed (stopped)" in result.stdout
    assert f"stopped by {sig} after 31 of 120" in result.stderr
    assert "run the same command again to replay the 89 left" in result.stderr
    assert "Traceback" not in result.stderr
    assert remaining(path) == [letter_id(n) for n in range(31, 120)]

    # When the same command runs again, it replays the rest, each letter once in all
    result = replay(cli, str(path), "--all", "--batch", "1000")
    assert result.returncode == 0, result.stderr
    assert "replayed 89 of 89" in result.stdout
    assert handled(tmp_path) == list(range(120))


def test_parse_rate_reads_per_second_minute_and_hour() -> None:
    assert parse_rate("200/s") == 200
    assert parse_rate("30/m") == 0.5
    assert parse_rate("1.5/h") == 1.5 / 3600
    for bad in ("0/s", "10", "10/d", "-1/s", "x/s", "\u0661\u0660/s", ""):
        with pytest.raises(ValueError, match="number above 0"):
            parse_rate(bad)


def test_a_bad_rate_or_batch_is_a_one_line_error(cli: CLI, tmp_path: Path) -> None:
    path = sqlite_dlq(tmp_path, 1)
    for option in (["--rate", "fast"], ["--batch", "0"]):
        result = replay(cli, str(path), "--all", *option)
        assert result.returncode == 2
        assert_one_line_error(result, f"argument {option[0]}")
    assert remaining(path) == [letter_id(0)]


class FakeClock:
    """A clock that moves only when slept on (or told to)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert 0 < seconds <= 0.1
        self.now += seconds


def test_the_rate_limit_spaces_letters_and_never_bursts_to_catch_up() -> None:
    clock = FakeClock()
    limit = RateLimit(parse_rate("4/s"), clock=clock, sleep=clock.sleep)
    starts = []
    for n in range(6):
        assert limit.wait()
        starts.append(round(clock.now - 100, 6))
        if n == 2:
            clock.now += 2.0  # a slow handler
    # 0.25 s apart; after the slow one, the next goes at once, then 0.25 s apart again
    assert starts == [0.0, 0.25, 0.5, 2.5, 2.75, 3.0]


def test_a_stop_request_ends_a_rate_limited_wait() -> None:
    clock = FakeClock()
    limit = RateLimit(parse_rate("1/m"), clock=clock, sleep=clock.sleep)
    assert limit.wait()
    assert not limit.wait(lambda: clock.now > 101.0)
    assert clock.now < 101.2


def test_deletes_commit_every_batch_and_after_the_time_limit(tmp_path: Path) -> None:
    clock = FakeClock()
    with SQLiteDLQ(tmp_path / "d.db") as dlq:
        fill(dlq, 25)
        deletes = Deletes(dlq, batch=10, every=1.0, clock=clock)
        for n in range(12):
            deletes.add(letter_id(n))
        assert (len(dlq), deletes.committed) == (15, 10)
        deletes.tick()
        assert len(dlq) == 15  # not yet a second since the last commit
        clock.now += 1.0
        deletes.tick()
        assert (len(dlq), deletes.committed) == (13, 12)


def test_the_progress_line_is_redrawn_a_few_times_a_second_with_an_eta() -> None:
    clock, stream = FakeClock(), io.StringIO()
    progress = ReplayProgress(stream, 1000, clock=clock)
    for _ in range(400):
        clock.now += 1 / 1024  # exact in binary
        progress.advance()
    # 0.39 s at 1,024/s: the first draw, then one every 0.25 s
    draws = stream.getvalue().split("\r")[1:]
    assert len(draws) == 2
    assert draws[-1].endswith("256/1000 1,024/s ETA 1s")


def test_progress_shows_on_a_terminal_only(cli: CLI, tmp_path: Path) -> None:
    path = sqlite_dlq(tmp_path, 60)
    quiet = replay(
        cli, str(path), "--all", "--batch", "1000", env={"STOP_AT": "29", "SIG": "SIGINT"}
    )
    assert quiet.returncode == 5
    assert "replaying" not in quiet.stderr
    assert "\r" not in quiet.stderr

    main, other = pty.openpty()
    process = subprocess.Popen(
        cli.command("dlq", "replay", "--processor", "fast:processor", "--dlq", str(path), "--all"),
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=other,
    )
    os.close(other)
    seen = b""
    while select.select([main], [], [], 30)[0]:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        seen += chunk
    process.communicate(timeout=30)
    os.close(main)
    assert process.returncode == 0
    assert b"\rreplaying [" in seen.replace(b"\r\x1b[2K", b"\r")
    assert b"30/30" in seen
    assert b"ETA" in seen
