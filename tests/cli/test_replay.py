"""``missive dlq replay``: dead letters back through the processor once the bug is fixed.

The processor is ``shop.py`` in the test's directory: its ``orders`` handler raises
until a file named ``fixed`` exists, so the tests break and fix it as a user would.
"""

from __future__ import annotations

import json
from pathlib import Path

import missive
from missive.dlq.sqlite import SQLiteDLQ
from missive.testing.conformance.dlq_suite import failure
from tests.cli._apps import SHOP, write_app
from tests.cli.conftest import CLI, Result, assert_one_line_error
from tests.cli.test_dlq_inspect import fill, order


def shop(tmp_path: Path) -> Path:
    """Write the shop processor; its DLQ is ``dlq.db`` next to it."""
    write_app(tmp_path, "shop", SHOP)
    return tmp_path / "dlq.db"


def run_broken_shop(cli: CLI, *messages: dict[str, object]) -> None:
    """Run the shop on stdin while its orders handler is broken."""
    lines = "".join(json.dumps(m) + "\n" for m in messages)
    result = cli("run", "shop:adapter", input=lines)
    assert result.returncode == 0, result.stderr


def replay(cli: CLI, dlq: Path, *args: str) -> Result:
    """Run ``missive dlq replay`` with the shop processor on ``dlq``."""
    return cli("dlq", "replay", "--processor", "shop:processor", "--dlq", str(dlq), *args)


def records(path: Path) -> dict[bytes, tuple[str, int]]:
    """``{id: (reason, times)}`` of the DLQ at ``path``."""
    with SQLiteDLQ(path) as dlq:
        return {r.message_id: (str(r.reason), r.times) for r in dlq.records()}


def test_replay_after_a_fix_empties_the_dlq(cli: CLI, tmp_path: Path) -> None:
    # Given three orders dead-lettered by a broken handler
    dlq = shop(tmp_path)
    run_broken_shop(cli, *({"kind": "order", "n": n} for n in (1, 2, 3)))
    assert len(records(dlq)) == 3

    # When the handler is fixed and every dead letter replayed
    (tmp_path / "fixed").touch()
    result = replay(cli, dlq, "--all")

    # Then each was handled once, and the DLQ is empty
    assert result.returncode == 0, result.stderr
    assert "3 handled and removed, 0 failed again (kept), 0 nacked (kept)" in result.stdout
    assert (tmp_path / "handled.log").read_text().split() == ["1", "2", "3"]
    assert records(dlq) == {}


def test_a_dead_letter_that_fails_again_is_kept_with_its_new_reason_and_count(
    cli: CLI, tmp_path: Path
) -> None:
    dlq = shop(tmp_path)
    fill(dlq, (order(1), failure("an older problem", "orders")))

    result = replay(cli, dlq, "order-1")

    assert result.returncode == 1
    assert "order-1: failed again: handler 'orders' raised RuntimeError" in result.stdout
    assert "dead-lettered 2 times" in result.stdout
    assert records(dlq) == {
        b"order-1": ("handler 'orders' raised RuntimeError: orders are broken", 2)
    }


def test_a_nacked_dead_letter_is_kept_unchanged_and_reported(cli: CLI, tmp_path: Path) -> None:
    dlq = shop(tmp_path)
    later = missive.JSONMessage(b'{"kind": "later"}', b"later-1")
    fill(dlq, (later, "was down"))

    result = replay(cli, dlq, "--all")

    assert result.returncode == 1
    assert "later-1: nacked by its handler; kept unchanged" in result.stdout
    assert records(dlq) == {b"later-1": ("was down", 1)}


def test_replay_by_ids_replays_only_those(cli: CLI, tmp_path: Path) -> None:
    dlq = shop(tmp_path)
    fill(dlq, (order(1), "x"), (order(2), "x"), (order(3), "x"))
    (tmp_path / "fixed").touch()

    result = replay(cli, dlq, "order-1", "order-3")

    assert result.returncode == 0, result.stderr
    assert list(records(dlq)) == [b"order-2"]


def test_replay_by_reason_replays_those_whose_reason_has_the_text(cli: CLI, tmp_path: Path) -> None:
    dlq = shop(tmp_path)
    fill(dlq, (order(1), "database down"), (order(2), "card declined"))
    (tmp_path / "fixed").touch()

    result = replay(cli, dlq, "--reason", "database")

    assert result.returncode == 0, result.stderr
    assert list(records(dlq)) == [b"order-2"]


def test_replay_runs_the_processing_hooks_once(cli: CLI, tmp_path: Path) -> None:
    dlq = shop(tmp_path)
    fill(dlq, (order(1), "x"), (order(2), "x"))
    (tmp_path / "fixed").touch()

    replay(cli, dlq, "--all")

    hooks = [line.split()[0] for line in (tmp_path / "hooks.log").read_text().splitlines()]
    assert hooks == ["before", "after"]


def test_dry_run_says_where_each_would_go_and_changes_nothing(cli: CLI, tmp_path: Path) -> None:
    # Given dead letters for one handler, for none, for two, and one not JSON
    dlq = shop(tmp_path)
    fill(
        dlq,
        (order(1), "x"),
        (missive.JSONMessage(b'{"kind": "gift"}', b"gift"), "x"),
        (missive.JSONMessage(b'{"kind": "any"}', b"any"), "x"),
        (missive.JSONMessage(b"{not json", b"junk"), "x"),
    )
    (tmp_path / "fixed").touch()

    # When a dry run is asked for
    result = replay(cli, dlq, "--all", "--dry-run")

    # Then each row says where it would go, and nothing was handled or changed
    assert result.returncode == 0, result.stderr
    rows = {row.split("\t")[0]: row.split("\t")[1:] for row in result.stdout.splitlines()[1:]}
    assert rows["order-1"] == ["routed", "orders"]
    assert rows["gift"] == ["unmatched", "no handler matched the message"]
    assert rows["any"] == [
        "ambiguous",
        "2 handlers matched the message, exactly one must: refunds, anything",
    ]
    assert rows["junk"][0] == "error"
    assert rows["junk"][1].startswith("could not decode the message: invalid JSON")
    assert not (tmp_path / "handled.log").exists()
    assert not (tmp_path / "hooks.log").exists()
    assert all(times == 1 for _, times in records(dlq).values())


def test_a_message_class_the_processor_does_not_define_can_be_given(
    cli: CLI, tmp_path: Path
) -> None:
    # Given a dead letter stored as a class that the shop's modules do not define
    class OrderMessage(missive.JSONMessage):
        __slots__ = ()

    dlq = shop(tmp_path)
    fill(dlq, (OrderMessage(b'{"kind": "order", "n": 5}', b"order-5"), "x"))
    (tmp_path / "fixed").touch()

    # When it is replayed as a JSONMessage
    result = replay(cli, dlq, "--all", "--message-class", "missive:JSONMessage")

    # Then it is handled
    assert result.returncode == 0, result.stderr
    assert records(dlq) == {}


def test_a_message_class_not_defined_is_skipped_and_kept_as_it_was(
    cli: CLI, tmp_path: Path
) -> None:
    # Given a dead letter stored as a class that the shop's modules do not define
    class OrderMessage(missive.JSONMessage):
        __slots__ = ()

    dlq = shop(tmp_path)
    fill(dlq, (OrderMessage(b'{"kind": "order", "n": 5}', b"order-5"), "x"))
    (tmp_path / "fixed").touch()

    # When it is replayed without saying which class to use
    result = replay(cli, dlq, "--all")

    # Then it is skipped with a warning, and kept with its class
    assert result.returncode == 1
    assert "OrderMessage is not defined by the processor's modules: skipping" in result.stderr
    assert "1 skipped (kept)" in result.stdout
    with SQLiteDLQ(dlq) as store:
        assert store.record(b"order-5").message_class.endswith("OrderMessage")
        assert store.record(b"order-5").times == 1


def test_replay_needs_exactly_one_selection(cli: CLI, tmp_path: Path) -> None:
    dlq = shop(tmp_path)
    fill(dlq, (order(1), "x"))

    result = replay(cli, dlq, "order-1", "--all")

    assert_one_line_error(result, "exactly one of")
    assert records(dlq) == {b"order-1": ("x", 1)}


def test_replay_of_an_unknown_id_replays_nothing(cli: CLI, tmp_path: Path) -> None:
    dlq = shop(tmp_path)
    fill(dlq, (order(1), "x"))
    (tmp_path / "fixed").touch()

    result = replay(cli, dlq, "order-1", "nope")

    assert_one_line_error(result, "no dead letter with id 'nope'", "nothing replayed")
    assert list(records(dlq)) == [b"order-1"]


def test_a_failing_before_processing_hook_replays_nothing(cli: CLI, tmp_path: Path) -> None:
    dlq = shop(tmp_path)
    with open(tmp_path / "shop.py", "a") as source:
        source.write(
            "\n@processor.before_processing\ndef connect(ctx):\n    raise OSError('db down')\n"
        )
    fill(dlq, (order(1), "x"))
    (tmp_path / "fixed").touch()

    result = replay(cli, dlq, "--all")

    assert_one_line_error(result, "before_processing hooks raised OSError: db down")
    assert records(dlq) == {b"order-1": ("x", 1)}
