"""Failure groups: the fingerprint of dead letters written by a real processor to a
real SQLite DLQ, and the groups they form."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import missive
from missive.dlq import DeadLetter
from missive.dlq.groups import (
    fingerprint,
    group_records,
    in_group,
    is_fingerprint,
    normalise,
    user_frames,
)
from missive.dlq.sqlite import SQLiteDLQ

Handler = Callable[[missive.JSONMessage, missive.HandlingContext[missive.JSONMessage]], None]


def _lookup(n: int) -> None:
    raise KeyError(f"order {n} of 'customer-{n * 7}' not found at 10.0.0.{n % 250} (req {n:x}aa)")


def _other_lookup(n: int) -> None:
    raise KeyError(f"order {n} of 'customer-{n * 7}' not found at 10.0.0.{n % 250} (req {n:x}aa)")


def orders(message: missive.JSONMessage, ctx: missive.HandlingContext[missive.JSONMessage]) -> None:
    """Fails in _lookup, or in _other_lookup for "other" orders, or with a ValueError."""
    data = message.get_json()
    if data.get("type_error"):
        raise ValueError(f"order {data['n']} of 'customer-{data['n'] * 7}' not found")
    (_other_lookup if data.get("other") else _lookup)(data["n"])


def again(message: missive.JSONMessage, ctx: missive.HandlingContext[missive.JSONMessage]) -> None:
    """A second handler of "both" messages."""
    orders(message, ctx)


@pytest.fixture
def dead_letters(tmp_path: Path) -> Iterator[Callable[..., list[DeadLetter]]]:
    """Processes JSON bodies through a processor whose ``orders`` handler fails, into
    a real SQLite DLQ; gives back the records stored, oldest first."""
    dlq = SQLiteDLQ(tmp_path / "dlq.db")
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()
    processor.set_dlq(dlq)
    processor.handle_for(lambda m: m.get_json().get("kind") == "order")(orders)
    processor.handle_for(lambda m: m.get_json().get("kind") == "both")(orders)
    processor.handle_for(lambda m: m.get_json().get("kind") == "both")(again)
    counter = iter(range(1_000_000))

    def process(*bodies: bytes | dict[str, object]) -> list[DeadLetter]:
        with processor.context() as context:
            for body in bodies:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                message_id = b"m-%d" % next(counter)
                context.process(missive.JSONMessage(data, message_id, {}))
        return list(dlq.records())

    yield process
    dlq.close()


def test_the_same_bug_with_other_numbers_ids_and_quoted_values_is_one_group(
    dead_letters: Callable[..., list[DeadLetter]],
) -> None:
    records = dead_letters(*({"kind": "order", "n": n} for n in (1, 42, 90_210)))

    assert len({fingerprint(r) for r in records}) == 1
    assert is_fingerprint(fingerprint(records[0]))


def test_another_exception_type_is_another_group(
    dead_letters: Callable[..., list[DeadLetter]],
) -> None:
    records = dead_letters({"kind": "order", "n": 1}, {"kind": "order", "n": 1, "type_error": 1})

    assert fingerprint(records[0]) != fingerprint(records[1])


def test_the_same_exception_raised_by_another_function_is_another_group(
    dead_letters: Callable[..., list[DeadLetter]],
) -> None:
    records = dead_letters({"kind": "order", "n": 1}, {"kind": "order", "n": 1, "other": 1})

    assert str(records[0].reason) == str(records[1].reason)
    assert fingerprint(records[0]) != fingerprint(records[1])


def test_decode_failures_group_by_kind_whatever_the_position(
    dead_letters: Callable[..., list[DeadLetter]],
) -> None:
    records = dead_letters(
        b"{not json", b'{"kind": "order", ', b"nope", {"kind": "order", "n": 1}
    )

    groups = group_records(records)

    decode = [g for g in groups if g.kind == "decode"]
    assert [g.count for g in decode] == [2, 1]  # "Expecting property name", "Expecting value"
    assert {fingerprint(records[0]), fingerprint(records[1])} == {decode[0].id}


def test_routing_failures_group_by_kind(dead_letters: Callable[..., list[DeadLetter]]) -> None:
    records = dead_letters(
        {"kind": "nobody", "n": 1}, {"kind": "nobody", "n": 2}, {"kind": "both", "n": 3}
    )

    groups = {g.kind: g for g in group_records(records)}

    assert groups["no-handler"].count == 2
    assert groups["ambiguous"].count == 1
    assert groups["ambiguous"].example.startswith("2 handlers matched the message")


def test_a_group_sums_up_its_dead_letters_largest_first(
    dead_letters: Callable[..., list[DeadLetter]],
) -> None:
    records = dead_letters(
        {"kind": "nobody"}, *({"kind": "order", "n": n} for n in range(3)), {"kind": "nobody"}
    )

    first, second = group_records(records)

    assert (first.kind, first.count, first.handlers) == ("exception", 3, ("orders",))
    assert first.exc_type == "KeyError"
    assert first.example == "handler 'orders' raised KeyError"
    assert first.first_seen == records[1].first_dead_lettered_at
    assert first.last_seen == records[3].dead_lettered_at
    assert (second.kind, second.count, second.handlers) == ("no-handler", 2, ())
    assert [r.message_id for r in in_group(records, second.id)] == [b"m-0", b"m-4"]


def test_no_payload_appears_in_a_group(dead_letters: Callable[..., list[DeadLetter]]) -> None:
    records = dead_letters({"kind": "order", "n": 7, "secret": "hunter2"}, b'{"secret": hunter2}')

    for group in group_records(records):
        assert "hunter2" not in repr(group)
        assert "7" not in group.example


def _record(reason: missive.DeadLetterReason | str, traceback: str | None = None) -> DeadLetter:
    """A record as a DLQ reads back what an older version, or a plain str, stored."""
    full = (
        reason if isinstance(reason, missive.DeadLetterReason) else missive.DeadLetterReason(reason)
    )
    now = datetime.now(UTC)
    return DeadLetter(
        message_id=b"m",
        message=missive.RawMessage(b"x", b"m", {}),
        reason=full,
        handler=full.handler,
        exc_type=full.exc_type,
        traceback=traceback if traceback is not None else full.traceback,
        message_class="missive.message.RawMessage",
        attributes={},
        size=1,
        first_dead_lettered_at=now,
        dead_lettered_at=now,
        times=1,
    )


def test_poison_messages_are_one_group_whatever_their_counts_and_queue() -> None:
    a = _record("delivered 4 times, more than max_deliveries=3: not handled again (poison message)")
    b = _record(
        "delivered 11 times, more than max_deliveries=10, from queue 'orders': not handled "
        "again (poison message)"
    )

    assert fingerprint(a) == fingerprint(b)
    assert [g.kind for g in group_records([a, b])] == ["poison"]


def test_a_note_of_no_later_retry_does_not_split_a_group() -> None:
    reason = missive.DeadLetterReason(
        "handler 'orders' raised KeyError: 'a-1'; not retried later: delivered 3 times, "
        "max_deliveries=3",
        summary="handler 'orders' raised KeyError; not retried later: delivered 3 times, "
        "max_deliveries=3",
        handler="orders",
        exc_type="KeyError",
    )
    plain = missive.DeadLetterReason(
        "handler 'orders' raised KeyError: 'b-2'",
        summary="handler 'orders' raised KeyError",
        handler="orders",
        exc_type="KeyError",
    )

    assert fingerprint(_record(reason, "")) == fingerprint(_record(plain, ""))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("order 12 not found", "order <n> not found"),
        ("no row for 'abc' or \"d e\"", "no row for <str> or <str>"),
        ("id 3f2504e0-4f89-11d3-9a0c-0305e82c3301 gone", "id <uuid> gone"),
        ("at 0x7f3a12 and deadbeef1234", "at <hex> and <hex>"),
        ("mail bob.smith+x@example.co.uk now", "mail <email> now"),
        ("GET https://api.example.com/v1/x?y=2 failed", "GET <url> failed"),
        ("peer 192.168.1.20:5432 and fe80::1 down", "peer <ip> and <ip> down"),
        ("user usr_8fj3k2 and ORD-2024-77", "user <id> and <id>"),
        ("can't   parse\nit", "can't parse it"),
    ],
)
def test_normalise_replaces_what_varies(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_user_frames_leave_out_missive_the_standard_library_and_packages() -> None:
    traceback = "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "/srv/app/first.py", line 3, in outer',
            "Traceback (most recent call last):",
            '  File "/srv/app/worker.py", line 10, in main',
            '  File "/opt/checkout/missive/context.py", line 200, in process',
            '  File "/srv/app/shop/orders.py", line 42, in record_order',
            "    lookup(order)",
            "    ^^^^^^^^^^^^^",
            '  File "/usr/lib/python3.12/json/__init__.py", line 346, in loads',
            '  File "/srv/venv/lib/python3.11/site-packages/psycopg/cursor.py", line 7, in run',
            '  File "<frozen importlib._bootstrap>", line 1, in _load',
            '  File "/srv/app/shop/db.py", line 9, in lookup',
            "KeyError: 'x'",
        ]
    )

    assert user_frames(traceback) == [
        "app/worker.py:main",
        "shop/orders.py:record_order",
        "shop/db.py:lookup",
    ]


def test_only_the_innermost_three_user_frames_count() -> None:
    frames = [f'  File "/srv/app/m{i}.py", line {i}, in f{i}' for i in range(6)]

    assert user_frames("Traceback (most recent call last):\n" + "\n".join(frames)) == [
        "app/m3.py:f3",
        "app/m4.py:f4",
        "app/m5.py:f5",
    ]


def test_a_plain_text_reason_of_an_older_dlq_has_a_fingerprint() -> None:
    a, b = (
        _record("payment service said 503 to 'o-1'"),
        _record("payment service said 502 to 'o-9'"),
    )

    assert fingerprint(a) == fingerprint(b)
    assert group_records([a])[0].kind == "other"
