"""``missive routes check``: gaps and overlaps in a processor's matchers, before deploying."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import missive
from missive.cli._routes import Route, route
from tests.cli._apps import HELLO, SHOP, write_app
from tests.cli.conftest import CLI, assert_one_line_error
from tests.cli.test_dlq_inspect import fill, order

SAMPLES = '{"kind": "order", "n": 1}\n{"kind": "gift"}\n{"kind": "any"}\n{not json\n'


def rows(stdout: str) -> dict[str, list[str]]:
    """The report's rows by message, without the header."""
    return {row.split("\t")[0]: row.split("\t")[1:] for row in stdout.splitlines()[1:]}


def test_each_sample_is_reported_routed_unmatched_ambiguous_or_error(
    cli: CLI, tmp_path: Path
) -> None:
    # Given sample messages for one handler, none, two, and one not JSON
    write_app(tmp_path, "shop", SHOP)
    (tmp_path / "samples.jsonl").write_text(SAMPLES)

    # When the processor's routing is checked on them
    result = cli("routes", "check", "shop:processor", "samples.jsonl")

    # Then each line says where it goes; the exit status says some do not go to one
    assert result.returncode == 1
    report = rows(result.stdout)
    assert report["line 1"] == ["routed", "orders"]
    assert report["line 2"] == ["unmatched", "no handler matched the message"]
    assert report["line 3"] == [
        "ambiguous",
        "2 handlers matched the message, exactly one must: refunds, anything",
    ]
    assert report["line 4"][0] == "error"
    assert report["line 4"][1].startswith("could not decode the message: invalid JSON")
    assert "4 message(s): 1 routed, 1 unmatched, 1 ambiguous, 1 error" in result.stderr


def test_samples_that_all_route_to_one_handler_exit_zero(cli: CLI, tmp_path: Path) -> None:
    write_app(tmp_path, "shop", SHOP)

    result = cli(
        "routes", "check", "shop:processor", "-", input='{"kind": "order"}\n{"kind": "refund"}\n'
    )

    assert result.returncode == 0
    assert rows(result.stdout) == {"line 1": ["routed", "orders"], "line 2": ["routed", "refunds"]}


def test_quiet_lists_only_the_samples_not_routed_to_one(cli: CLI, tmp_path: Path) -> None:
    write_app(tmp_path, "shop", SHOP)

    result = cli(
        "routes", "check", "shop:processor", "-", "-q", input='{"kind": "order"}\n{"kind": "x"}\n'
    )

    assert list(rows(result.stdout)) == ["line 2"]


def test_dead_letters_can_be_the_samples(cli: CLI, tmp_path: Path, dlq_path: Path) -> None:
    write_app(tmp_path, "shop", SHOP)
    fill(dlq_path, (order(1), "x"), (missive.JSONMessage(b'{"kind": "gift"}', b"gift"), "x"))

    result = cli("routes", "check", "shop:processor", "--dlq", str(dlq_path))

    assert rows(result.stdout) == {
        "order-1": ["routed", "orders"],
        "gift": ["unmatched", "no handler matched the message"],
    }


def test_an_adapters_message_class_is_used_for_the_samples(cli: CLI, tmp_path: Path) -> None:
    # Given the quickstart's adapter, whose messages are RawMessages
    write_app(tmp_path, "hello", HELLO)

    result = cli("routes", "check", "hello:stdin_processor", "-", input="Hello\nBye\n")

    assert rows(result.stdout) == {
        "line 1": ["routed", "greet"],
        "line 2": ["unmatched", "no handler matched the message"],
    }


def test_the_message_class_can_be_given(cli: CLI, tmp_path: Path) -> None:
    # Given matchers that call get_json, and samples read as RawMessages
    write_app(tmp_path, "shop", SHOP)

    result = cli(
        "routes", "check", "shop:processor", "-", "--message-class", "missive:RawMessage",
        input='{"kind": "order"}\n',
    )  # fmt: skip

    # Then the matchers fail on them: the class given was used
    [(result_, text)] = rows(result.stdout).values()
    assert result_ == "error"
    assert text.endswith("raised AttributeError")


def test_a_samples_file_that_does_not_exist_is_an_error(cli: CLI, tmp_path: Path) -> None:
    write_app(tmp_path, "shop", SHOP)

    result = cli("routes", "check", "shop:processor", "nope.jsonl")

    assert_one_line_error(result, "cannot read 'nope.jsonl'")


def test_samples_and_dlq_cannot_both_be_given(cli: CLI, tmp_path: Path) -> None:
    result = cli("routes", "check", "shop:processor", "samples.jsonl", "--dlq", "dlq.db")

    assert result.returncode == 2
    assert "not allowed with" in result.stderr


def orders_router() -> Any:
    """The router of a processor whose one matcher, a lambda, reads the JSON "kind"."""
    processor: missive.Processor[Any] = missive.Processor()

    @processor.handle_for(lambda m: m.get_json()["kind"] == "order")
    def orders(message: Any, ctx: missive.HandlingContext[Any]) -> None:
        ctx.ack()

    return processor.router


def test_a_raising_matcher_is_reported_with_its_handler_and_no_address() -> None:
    # Given a sample that the matcher cannot read (a RawMessage has no get_json)
    # When it is routed
    result = route(orders_router(), missive.RawMessage(b'{"kind": "order"}'))

    # Then the line names the matcher as it was written, and its handler
    assert result == (
        Route.ERROR,
        "matcher <lambda> in tests.cli.test_routes.orders_router of handler 'orders' raised "
        "AttributeError",
    )


def test_an_undecodable_sample_is_reported_with_where_it_breaks() -> None:
    result = route(orders_router(), missive.JSONMessage(b'{"kind": }'))

    assert result == (
        Route.ERROR,
        "could not decode the message: invalid JSON: Expecting value at line 1 column 10",
    )


def test_a_sample_with_nan_is_reported_undecodable() -> None:
    # Given a sample that Python's json accepts but JSON does not
    result = route(orders_router(), missive.JSONMessage(b'{"kind": "order", "total": NaN}'))

    # Then it is not routed: the processor would dead-letter it
    assert result == (
        Route.ERROR,
        "could not decode the message: invalid JSON: NaN is not a JSON number",
    )


def test_a_sample_longer_than_a_message_may_be_is_an_error_and_the_next_is_checked(
    cli: CLI, tmp_path: Path
) -> None:
    # Given a samples file whose first line is over 16 MiB and whose second is fine
    write_app(tmp_path, "shop", SHOP)
    with (tmp_path / "samples.jsonl").open("wb") as samples:
        samples.write(b'{"kind": "order", "pad": "' + b"x" * (16 * 1024 * 1024) + b'"}\n')
        samples.write(b'{"kind": "order"}\n')

    # When the routing is checked on them
    result = cli("routes", "check", "shop:processor", "samples.jsonl")

    # Then the long line is an error saying so, and the next line is still checked
    assert result.returncode == 1
    report = rows(result.stdout)
    assert report["line 1"][0] == "error"
    assert "longer than the 16777216 bytes a message may be" in report["line 1"][1]
    assert report["line 2"] == ["routed", "orders"]
    assert "Traceback" not in result.stderr
