"""The user guide's pages: every Python block runs exactly as printed, nothing filled in.

Each block runs alone, in a fresh interpreter and folder (``tests/docs_blocks.py``);
a block of pytest tests runs under pytest. A block that runs a broker's adapter gets
the real broker. A few blocks have their behaviour checked too: what the quickstart
promises its reader.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests import docs_blocks
from tests.docs_blocks import ROOT, Block, python_blocks
from tests.services import require

PAGES = ["quickstart.rst", "routing.md", "messages.md", "hooks.md", "testing.md"]
BLOCKS = [block for page in PAGES for block in python_blocks(ROOT / "docs" / page)]
#: Blocks whose ``__main__`` runs a broker's adapter until stopped: run against it below.
ON_A_BROKER = [block for block in BLOCKS if "RedisPubSubAdapter" in block.code]
ALONE = [block for block in BLOCKS if block not in ON_A_BROKER]
QUICKSTART = python_blocks(ROOT / "docs" / "quickstart.rst")


def the_block(page: str, marker: str) -> Block:
    """The one block of ``page`` whose code holds ``marker``."""
    [block] = [b for b in python_blocks(ROOT / "docs" / page) if marker in b.code]
    return block


def dead_letters(path: Path) -> list[str]:
    """The reasons stored in an SQLite DLQ file, read through the missive command."""
    done = docs_blocks.python(["-m", "missive", "dlq", "ls", "--dlq", str(path)], path.parent)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines()[1:] if line.strip()]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_has_python_examples(page: str) -> None:
    assert python_blocks(ROOT / "docs" / page)


def test_the_quickstart_keeps_every_example_of_the_spec_but_the_merged_matcher_one() -> None:
    # The spec's eight blocks, its matcher class and its use now one complete block.
    spec = python_blocks(ROOT / "tests" / "fixtures" / "spec_quickstart.rst")
    assert (len(spec), len(QUICKSTART)) == (8, 7)


@pytest.mark.parametrize("block", ALONE, ids=docs_blocks.ids(ALONE))
def test_every_python_block_runs_as_printed(block: Block, tmp_path: Path) -> None:
    # Given the block saved alone in an empty folder; when it is run (pytest for tests)
    done = docs_blocks.run(block, tmp_path)
    # Then it exits 0 with no traceback or warning; a block of tests ran some and passed
    docs_blocks.assert_ran_cleanly(done)
    if block.is_pytest_module:
        assert " passed" in done.stdout, done.stdout
        assert "failed" not in done.stdout, done.stdout


def test_the_hello_example_greets_hello_and_dead_letters_any_other_line(tmp_path: Path) -> None:
    # Given the quickstart's first example saved as hello_processor.py
    block = QUICKSTART[0]
    # When two lines are piped into it, as the quickstart shows
    done = docs_blocks.run_script(
        block, tmp_path, stdin=b"Hello\nGoodbye\n", name="hello_processor.py"
    )
    # Then it greets the first, stores the second in dlq.db, and ends cleanly
    docs_blocks.assert_ran_cleanly(done)
    assert done.stdout == "Hello whoever you are\n"
    [row] = dead_letters(tmp_path / "dlq.db")
    assert "no handler matched the message" in row


def test_the_hello_example_runs_with_missive_run(tmp_path: Path) -> None:
    # Given hello_processor.py; when `missive run hello_processor:adapter` reads a pipe
    docs_blocks.save(QUICKSTART[0], tmp_path, "hello_processor.py")
    done = docs_blocks.python(
        ["-m", "missive", "run", "hello_processor:adapter"], tmp_path, stdin=b"Hello\n"
    )
    # Then the handler greets, as with python
    assert done.returncode == 0, done.stderr
    assert "Hello whoever you are" in done.stdout
    assert "Traceback" not in done.stderr


def test_the_matcher_example_routes_by_the_label_it_was_given(tmp_path: Path) -> None:
    done = docs_blocks.run_script(the_block("quickstart.rst", "HasLabelMatcher"), tmp_path)
    docs_blocks.assert_ran_cleanly(done)
    assert done.stdout == "sign-in by ada\nsign-out by ada\n"


def test_the_hooks_example_logs_the_time_taken(tmp_path: Path) -> None:
    # Given the hooks example; when a line is piped into it
    block = the_block("quickstart.rst", "record_start_time")
    done = docs_blocks.run_script(block, tmp_path, stdin=b"anything\n")
    # Then its after_handling hook logged how long the handling took
    docs_blocks.assert_ran_cleanly(done)
    assert "DEBUG:__main__:took 0:00:00" in done.stderr


def test_the_dlq_example_stores_the_undecodable_message(tmp_path: Path) -> None:
    done = docs_blocks.run_script(the_block("quickstart.rst", "not JSON at all"), tmp_path)
    docs_blocks.assert_ran_cleanly(done)
    [row] = dead_letters(tmp_path / "dlq.db")
    assert "could not decode the message" in row


def test_the_hooks_page_example_stores_orders_and_reports_each_message(tmp_path: Path) -> None:
    block = the_block("hooks.md", "open_database")
    done = docs_blocks.run_script(block, tmp_path, stdin=b'{"item": "tea"}\n{"other": 1}\n')
    docs_blocks.assert_ran_cleanly(done)
    assert done.stdout.startswith("store_order: Outcome.ACKED in ")
    with sqlite3.connect(tmp_path / "orders.db") as db:
        assert db.execute("SELECT item FROM orders").fetchall() == [("tea",)]
    db.close()
    [row] = dead_letters(tmp_path / "dlq.db")
    assert "no handler matched the message" in row


@pytest.mark.parametrize("block", ON_A_BROKER, ids=docs_blocks.ids(ON_A_BROKER))
def test_the_redis_example_greets_a_message_published_on_its_channel(
    block: Block, tmp_path: Path
) -> None:
    require("redis")
    import redis

    # Given the example running as a script, as printed, on the local Redis
    process = docs_blocks.start_script(block, tmp_path)
    client = redis.Redis()
    try:
        # When Hello is published on its channel (again, until it has subscribed)
        deadline = time.monotonic() + 30
        while "Hello whoever you are" not in (tmp_path / "out").read_text():
            assert process.poll() is None, (tmp_path / "err").read_text()
            assert time.monotonic() < deadline, (tmp_path / "err").read_text()
            client.publish("missive", b"Hello")
            time.sleep(0.2)
    finally:
        # Then it greeted; and SIGTERM stops it gracefully
        process.terminate()
        status = process.wait(timeout=30)
        client.close()
    err = (tmp_path / "err").read_text()
    assert status == 0, err
    assert "Traceback" not in err
