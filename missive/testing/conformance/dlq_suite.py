"""The DLQ conformance suite: what every DLQ must do, a plain ``dict`` included.

Public: for third-party DLQs as well as Missive's own. Two base classes, run by
subclassing them in a DLQ's test module:

* :class:`MappingSuite`: the mapping every DLQ is (what the processor relies on).
  A ``dict`` passes it.
* :class:`StoreSuite`: a :class:`~missive.dlq.DeadLetterStore` (records, times,
  oldest, close, rebuilt messages), on top of the mapping suite.

A subclass sets ``features`` and overrides the ``open_dlq`` fixture: a function that
opens a DLQ on this test's own storage (each call a new handle on the same storage)
and that closes what it opened once the test ends. ``features`` say which optional
behaviours to test::

    from missive.testing.conformance import Features, StoreSuite

    class TestMyDLQ(StoreSuite):
        features = Features(persistent=True)

        @pytest.fixture
        def open_dlq(self, tmp_path):
            opened = []

            def open_one():
                opened.append(MyDLQ(tmp_path / "dlq"))
                return opened[-1]

            yield open_one
            for dlq in opened:
                dlq.close()

:func:`failure` and :func:`put` make reasons and write messages as the processor does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

import missive
from missive.dlq import DeadLetterStore
from missive.reason import DeadLetterReason

DLQ = missive.DLQ


@dataclass(frozen=True)
class Features:
    """What a DLQ can do beyond the mapping every DLQ is."""

    #: A new handle on the same storage sees what an earlier one wrote.
    persistent: bool = False


class SuiteMessage(missive.Message):
    """A custom message class, already imported when a DLQ reads it back."""

    __slots__ = ()


def failure(message: str = "bad input", handler: str | None = "orders") -> missive.DeadLetterReason:
    """A reason as the processor makes it for a handler that raised ValueError."""
    try:
        raise ValueError(message)
    except ValueError as exc:
        return missive.DeadLetterReason.from_exception(f"handler {handler!r}", exc, handler=handler)


def put(dlq: DLQ, message: missive.Message, reason: str = "no handler matched the message") -> None:
    """Write ``message`` as the processor does."""
    dlq[message.message_id] = (message, reason)


class MappingSuite:
    """Every DLQ: a mutable mapping from message id to ``(message, reason)``."""

    features: ClassVar[Features] = Features()

    @pytest.fixture
    def open_dlq(self) -> Callable[[], DLQ]:
        raise NotImplementedError("a DLQ's test class overrides the open_dlq fixture")

    @pytest.fixture
    def dlq(self, open_dlq: Callable[[], DLQ]) -> DLQ:
        return open_dlq()

    def test_a_new_dlq_is_empty(self, dlq: DLQ) -> None:
        assert len(dlq) == 0
        assert list(dlq) == []

    def test_a_message_reads_back_with_its_id_bytes_and_attributes(self, dlq: DLQ) -> None:
        message = missive.RawMessage(b"payload", b"id-1", {"queue": "orders", "count": 3})

        put(dlq, message)
        read, _ = dlq[b"id-1"]

        assert (read.message_id, read.raw_data) == (b"id-1", b"payload")
        assert dict(read.attributes) == {"queue": "orders", "count": 3}

    @pytest.mark.parametrize("cls", [missive.JSONMessage, missive.RawMessage, SuiteMessage])
    def test_a_message_reads_back_as_its_class(self, dlq: DLQ, cls: type[missive.Message]) -> None:
        message = cls(b'{"a": 1}', b"id-1")

        put(dlq, message)

        assert type(dlq[b"id-1"][0]) is cls

    def test_a_binary_payload_reads_back_unchanged(self, dlq: DLQ) -> None:
        payload = bytes(range(256)) * 4

        put(dlq, missive.RawMessage(payload, b"id-1"))

        assert dlq[b"id-1"][0].raw_data == payload

    def test_an_empty_payload_reads_back_empty(self, dlq: DLQ) -> None:
        put(dlq, missive.RawMessage(b"", b"id-1"))

        assert dlq[b"id-1"][0].raw_data == b""

    def test_bytes_attributes_read_back_as_bytes(self, dlq: DLQ) -> None:
        attributes = {"key": b"\x00\xff", "headers": {"trace": b"abc", "n": [1, b"\x01"]}}

        put(dlq, missive.RawMessage(b"x", b"id-1", attributes))

        assert dict(dlq[b"id-1"][0].attributes) == attributes

    def test_a_reason_reads_back_with_its_details(self, dlq: DLQ) -> None:
        reason = failure()

        put(dlq, missive.RawMessage(b"x", b"id-1"), reason)
        read = dlq[b"id-1"][1]

        assert read == reason
        assert isinstance(read, missive.DeadLetterReason)
        assert (read.summary, read.handler, read.exc_type, read.traceback) == (
            reason.summary,
            "orders",
            "ValueError",
            reason.traceback,
        )

    def test_a_plain_str_reason_reads_back_equal(self, dlq: DLQ) -> None:
        put(dlq, missive.RawMessage(b"x", b"id-1"), "gave up")

        assert dlq[b"id-1"][1] == "gave up"

    def test_len_counts_the_messages(self, dlq: DLQ) -> None:
        for number in range(3):
            put(dlq, missive.RawMessage(b"x", b"id-%d" % number))

        assert len(dlq) == 3

    def test_iteration_gives_the_ids_oldest_first(self, dlq: DLQ) -> None:
        for message_id in (b"c", b"a", b"b"):
            put(dlq, missive.RawMessage(b"x", message_id))

        assert list(dlq) == [b"c", b"a", b"b"]

    def test_writing_an_id_again_keeps_one_entry(self, dlq: DLQ) -> None:
        put(dlq, missive.RawMessage(b"x", b"id-1"), "first")

        put(dlq, missive.RawMessage(b"x", b"id-1"), "second")

        assert list(dlq) == [b"id-1"]

    def test_writing_an_id_again_replaces_its_reason(self, dlq: DLQ) -> None:
        put(dlq, missive.RawMessage(b"x", b"id-1"), "first")

        put(dlq, missive.RawMessage(b"x", b"id-1"), "second")

        assert dlq[b"id-1"][1] == "second"

    def test_writing_an_id_again_keeps_its_place(self, dlq: DLQ) -> None:
        for message_id in (b"a", b"b"):
            put(dlq, missive.RawMessage(b"x", message_id))

        put(dlq, missive.RawMessage(b"x", b"a"), "again")

        assert list(dlq) == [b"a", b"b"]

    def test_in_is_true_for_stored_ids_only(self, dlq: DLQ) -> None:
        put(dlq, missive.RawMessage(b"x", b"id-1"))

        assert b"id-1" in dlq
        assert b"id-2" not in dlq
        not_bytes: object = "id-1"
        assert not_bytes not in dlq

    def test_get_of_a_missing_id_gives_the_default(self, dlq: DLQ) -> None:
        assert dlq.get(b"missing") is None

    def test_reading_a_missing_id_raises_key_error(self, dlq: DLQ) -> None:
        with pytest.raises(KeyError):
            dlq[b"missing"]

    def test_del_removes_the_message(self, dlq: DLQ) -> None:
        for message_id in (b"a", b"b"):
            put(dlq, missive.RawMessage(b"x", message_id))

        del dlq[b"a"]

        assert list(dlq) == [b"b"]

    def test_del_of_a_missing_id_raises_key_error(self, dlq: DLQ) -> None:
        with pytest.raises(KeyError):
            del dlq[b"missing"]

    def test_an_id_written_again_after_del_goes_last(self, dlq: DLQ) -> None:
        for message_id in (b"a", b"b"):
            put(dlq, missive.RawMessage(b"x", message_id))
        del dlq[b"a"]

        put(dlq, missive.RawMessage(b"x", b"a"))

        assert list(dlq) == [b"b", b"a"]

    def test_clear_empties_the_dlq(self, dlq: DLQ) -> None:
        for message_id in (b"a", b"b"):
            put(dlq, missive.RawMessage(b"x", message_id))

        dlq.clear()

        assert len(dlq) == 0

    def test_writes_from_several_threads_are_all_kept(self, dlq: DLQ) -> None:
        def write(thread: int) -> None:
            for number in range(20):
                put(dlq, missive.RawMessage(b"x", b"%d-%d" % (thread, number)))

        threads = [threading.Thread(target=write, args=(thread,)) for thread in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert len(dlq) == 100

    def test_a_processor_dead_letters_a_failing_handler_s_message(self, dlq: DLQ) -> None:
        processor: missive.Processor[missive.JSONMessage] = missive.Processor()
        processor.set_dlq(dlq)

        @processor.handle_for(lambda message: True)
        def explode(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
            raise LookupError("no such customer")

        message = missive.JSONMessage(b'{"customer": 7}', attributes={"queue": "orders"})
        with processor.test_client() as client:
            outcome = client.send(message)

        assert outcome is missive.Outcome.DEAD_LETTERED
        stored, reason = dlq[message.message_id]
        assert (type(stored), stored.raw_data) == (missive.JSONMessage, b'{"customer": 7}')
        assert isinstance(reason, missive.DeadLetterReason)
        handler_name = processor.routes[0][2]  # the name the processor gave explode
        assert (reason.handler, reason.exc_type) == (handler_name, "LookupError")
        assert "no such customer" in reason

    def test_a_reopened_dlq_reads_what_was_written(self, open_dlq: Callable[[], DLQ]) -> None:
        if not self.features.persistent:
            pytest.skip("not persistent: each handle has its own storage")
        put(open_dlq(), missive.RawMessage(b"kept", b"id-1", {"k": b"v"}), failure())

        message, reason = open_dlq()[b"id-1"]

        assert (message.raw_data, dict(message.attributes), reason) == (
            b"kept",
            {"k": b"v"},
            failure(),
        )


class StoreSuite(MappingSuite):
    """A :class:`~missive.dlq.DeadLetterStore`: the mapping, plus records and closing."""

    @pytest.fixture
    def store(self, dlq: DLQ) -> DeadLetterStore:
        assert isinstance(dlq, DeadLetterStore)
        return dlq

    def test_put_many_stores_each_as_one_write_would(self, store: DeadLetterStore) -> None:
        messages = [missive.RawMessage(b"p%d" % i, b"id-%d" % i) for i in range(3)]
        store[b"id-0"] = (messages[0], "first")
        store.put_many([(m.message_id, (m, failure(f"bad {i}"))) for i, m in enumerate(messages)])
        assert list(store) == [b"id-0", b"id-1", b"id-2"]
        assert [store.record(m.message_id).reason for m in messages] == [
            f"handler 'orders' raised ValueError: bad {i}" for i in range(3)
        ]

    def test_put_many_of_nothing_stores_nothing(self, store: DeadLetterStore) -> None:
        store.put_many([])
        assert len(store) == 0

    def test_put_many_keeps_another_payload_under_a_reused_id_apart(
        self, store: DeadLetterStore
    ) -> None:
        store[b"id-1"] = (missive.RawMessage(b"first payload", b"id-1"), "first")
        batch = [
            missive.RawMessage(b"p0", b"id-0"),
            missive.RawMessage(b"another payload", b"id-1"),
            missive.RawMessage(b"p2", b"id-2"),
        ]
        store.put_many([(m.message_id, (m, f"bad {m.message_id!r}")) for m in batch])
        assert store[b"id-1"][0].raw_data == b"first payload"
        assert {key: store[key][0].raw_data for key in store} == {
            b"id-1": b"first payload",
            b"id-0": b"p0",
            b"id-2": b"p2",
            **{key: b"another payload" for key in store if key.startswith(b"id-1~")},
        }
        assert len(store) == 4

    def test_put_many_stores_none_when_one_is_refused(self, store: DeadLetterStore) -> None:
        good = missive.RawMessage(b"good", b"id-1")
        with pytest.raises((TypeError, ValueError)):
            store.put_many([(b"id-1", (good, "ok")), (b"id-2", (good, "id differs"))])
        assert len(store) == 0

    def test_attempts_are_counted_per_message(self, store: DeadLetterStore) -> None:
        assert [store.record_attempt(b"id-1") for _ in range(3)] == [1, 2, 3]
        assert store.record_attempt(b"id-2") == 1

    def test_forgotten_attempts_count_from_one_again(self, store: DeadLetterStore) -> None:
        store.record_attempt(b"id-1")
        store.record_attempt(b"id-1")

        store.forget_attempts(b"id-1")
        store.forget_attempts(b"id-never-counted")

        assert store.record_attempt(b"id-1") == 1

    def test_attempts_are_not_dead_letters(self, store: DeadLetterStore) -> None:
        store.record_attempt(b"id-1")
        assert len(store) == 0
        assert b"id-1" not in store

    def test_attempts_survive_reopening(self, open_dlq: Callable[[], DLQ]) -> None:
        # A worker that crashed counted the attempt; the next one must see it.
        first = open_dlq()
        assert isinstance(first, DeadLetterStore)
        first.record_attempt(b"id-1")
        second = open_dlq()
        assert isinstance(second, DeadLetterStore)
        assert second.record_attempt(b"id-1") == 2

    def test_a_record_describes_the_dead_letter(self, store: DeadLetterStore) -> None:
        reason = failure()
        put(store, missive.JSONMessage(b'{"a": 1}', b"id-1", {"queue": "q"}), reason)

        record = store.record(b"id-1")

        assert (record.message_id, record.message.raw_data, record.reason) == (
            b"id-1",
            b'{"a": 1}',
            reason,
        )
        assert (record.handler, record.exc_type, record.traceback) == (
            "orders",
            "ValueError",
            reason.traceback,
        )
        assert (record.message_class, dict(record.attributes), record.size, record.times) == (
            "missive.message.JSONMessage",
            {"queue": "q"},
            8,
            1,
        )

    def test_a_plain_str_reason_has_no_details(self, store: DeadLetterStore) -> None:
        put(store, missive.RawMessage(b"x", b"id-1"), "gave up")

        record = store.record(b"id-1")

        assert (record.reason, record.summary, record.handler, record.exc_type) == (
            "gave up",
            "gave up",
            None,
            None,
        )

    def test_a_new_record_was_first_and_last_dead_lettered_now(
        self, store: DeadLetterStore
    ) -> None:
        before = datetime.now(UTC)

        put(store, missive.RawMessage(b"x", b"id-1"))
        record = store.record(b"id-1")

        assert record.dead_lettered_at.utcoffset() == timedelta(0)
        assert record.first_dead_lettered_at == record.dead_lettered_at
        assert before <= record.dead_lettered_at <= datetime.now(UTC)

    def test_a_record_of_a_missing_id_raises_key_error(self, store: DeadLetterStore) -> None:
        with pytest.raises(KeyError):
            store.record(b"missing")

    def test_writing_an_id_again_counts_it_and_keeps_the_first_time(
        self, store: DeadLetterStore
    ) -> None:
        put(store, missive.RawMessage(b"x", b"id-1"), "first")
        first = store.record(b"id-1")
        time.sleep(0.002)

        put(store, missive.RawMessage(b"x", b"id-1"), "second")
        put(store, missive.RawMessage(b"x", b"id-1"), "third")
        record = store.record(b"id-1")

        assert (record.times, record.reason) == (3, "third")
        assert record.first_dead_lettered_at == first.first_dead_lettered_at
        assert record.dead_lettered_at > first.dead_lettered_at

    def test_writing_an_id_again_with_other_bytes_keeps_the_stored_payload(
        self, store: DeadLetterStore
    ) -> None:
        put(store, missive.RawMessage(b"first payload", b"id-1"), "first")

        put(store, missive.RawMessage(b"another payload", b"id-1"), "second")

        record = store.record(b"id-1")
        assert (record.message.raw_data, record.reason, record.times) == (
            b"first payload",
            "first",
            1,
        )

    def test_writing_an_id_again_with_other_bytes_keeps_both_under_a_key_that_says_so(
        self, store: DeadLetterStore
    ) -> None:
        put(store, missive.RawMessage(b"first payload", b"id-1"), "first")

        put(store, missive.RawMessage(b"another payload", b"id-1"), "second")

        first, other = store.records()
        assert first.message_id == b"id-1"
        assert other.message_id.startswith(b"id-1~other-payload-")
        assert (other.message.raw_data, other.reason) == (b"another payload", "second")

    def test_the_other_bytes_written_again_update_their_own_record(
        self, store: DeadLetterStore
    ) -> None:
        put(store, missive.RawMessage(b"first payload", b"id-1"), "first")
        put(store, missive.RawMessage(b"another payload", b"id-1"), "second")

        put(store, missive.RawMessage(b"another payload", b"id-1"), "third")

        assert [(r.message.raw_data, r.times) for r in store.records()] == [
            (b"first payload", 1),
            (b"another payload", 2),
        ]

    def test_oldest_is_the_first_written_not_the_newest(self, store: DeadLetterStore) -> None:
        for message_id in (b"first", b"second", b"third"):
            put(store, missive.RawMessage(b"x", message_id))

        oldest = store.oldest()

        assert oldest is not None
        assert oldest.message_id == b"first"

    def test_oldest_of_an_empty_store_is_none(self, store: DeadLetterStore) -> None:
        assert store.oldest() is None

    def test_records_are_oldest_first(self, store: DeadLetterStore) -> None:
        for message_id in (b"c", b"a", b"b"):
            put(store, missive.RawMessage(b"x", message_id))

        assert [record.message_id for record in store.records()] == [b"c", b"a", b"b"]

    def test_records_filtered_by_reason_contain_that_text(self, store: DeadLetterStore) -> None:
        put(store, missive.RawMessage(b"x", b"a"), failure("card declined"))
        put(store, missive.RawMessage(b"x", b"b"), failure("address missing"))

        found = [record.message_id for record in store.records(reason="declined")]

        assert found == [b"a"]

    def test_records_filtered_by_handler_come_from_that_handler(
        self, store: DeadLetterStore
    ) -> None:
        put(store, missive.RawMessage(b"x", b"a"), failure(handler="orders"))
        put(store, missive.RawMessage(b"x", b"b"), failure(handler="refunds"))
        put(store, missive.RawMessage(b"x", b"c"), "no handler matched the message")

        found = [record.message_id for record in store.records(handler="refunds")]

        assert found == [b"b"]

    def test_records_filtered_by_time_are_since_inclusive_and_before_exclusive(
        self, store: DeadLetterStore
    ) -> None:
        for message_id in (b"a", b"b", b"c"):
            put(store, missive.RawMessage(b"x", message_id))
            time.sleep(0.002)
        b_time = store.record(b"b").dead_lettered_at
        c_time = store.record(b"c").dead_lettered_at

        found = [record.message_id for record in store.records(since=b_time, before=c_time)]

        assert found == [b"b"]

    def test_records_accept_times_in_any_time_zone(self, store: DeadLetterStore) -> None:
        put(store, missive.RawMessage(b"x", b"a"))
        later = (store.record(b"a").dead_lettered_at + timedelta(microseconds=1)).astimezone(
            datetime.now().astimezone().tzinfo
        )

        assert [record.message_id for record in store.records(before=later)] == [b"a"]

    def test_records_limit_gives_the_oldest(self, store: DeadLetterStore) -> None:
        for message_id in (b"a", b"b", b"c"):
            put(store, missive.RawMessage(b"x", message_id))

        assert [record.message_id for record in store.records(limit=2)] == [b"a", b"b"]

    def test_records_with_a_naive_time_raise_value_error(self, store: DeadLetterStore) -> None:
        with pytest.raises(ValueError, match="aware"):
            list(store.records(since=datetime(2026, 1, 1)))

    def test_records_with_a_negative_limit_raise_value_error(self, store: DeadLetterStore) -> None:
        with pytest.raises(ValueError, match="limit"):
            list(store.records(limit=-1))

    def test_a_key_other_than_the_message_id_raises_value_error(
        self, store: DeadLetterStore
    ) -> None:
        with pytest.raises(ValueError, match="id"):
            store[b"other"] = (missive.RawMessage(b"x", b"id-1"), "reason")

    def test_a_message_of_an_unknown_class_reads_back_as_raw(self, store: DeadLetterStore) -> None:
        class Renamed(missive.Message):
            __slots__ = ()

        Renamed.__qualname__ = "NeverDefined"  # its class_name is now in no registry
        put(store, Renamed(b"x", b"id-1", {"k": "v"}))

        message = store[b"id-1"][0]

        assert (type(message), message.raw_data, dict(message.attributes)) == (
            missive.RawMessage,
            b"x",
            {"k": "v"},
        )
        assert store.record(b"id-1").message_class.endswith(".NeverDefined")

    def test_payloads_and_reasons_are_not_logged_at_info_or_above(
        self, store: DeadLetterStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level("DEBUG")

        put(store, missive.RawMessage(b"SECRET-PAYLOAD", b"id-1"), failure("SECRET-REASON"))
        store.record(b"id-1")
        list(store.records())

        logged = [record.getMessage() for record in caplog.records if record.levelname != "DEBUG"]
        assert not [text for text in logged if "SECRET" in text]
        assert not [r for r in caplog.records if "SECRET-PAYLOAD" in r.getMessage()]

    def test_a_processor_s_dead_letter_records_the_handler_and_exception(
        self, store: DeadLetterStore
    ) -> None:
        processor = missive.Processor()
        processor.set_dlq(store)

        @processor.handle_for(lambda message: True)
        def explode(message: missive.Message, ctx: missive.HandlingContext[Any]) -> None:
            raise LookupError("no such customer")

        message = missive.RawMessage(b"order 7")
        with processor.test_client() as client:
            client.send(message)
        record = store.record(message.message_id)

        assert (record.handler, record.exc_type) == (processor.routes[0][2], "LookupError")
        assert record.traceback is not None
        assert "LookupError: no such customer" in record.traceback
        assert "no such customer" not in record.summary

    def test_a_reason_with_a_lone_surrogate_is_stored_escaped(self, store: DeadLetterStore) -> None:
        # Exception text from bytes decoded with "surrogateescape": a failed write here
        # would leave the message unacked and redelivered forever.
        message = missive.RawMessage(b"x", b"id-surrogate")
        reason = DeadLetterReason.from_exception(
            "handler 'h'", ValueError(b"\xff!".decode("utf-8", "surrogateescape")), handler="h"
        )

        store[message.message_id] = (message, reason)

        stored = store.record(message.message_id)
        assert stored.reason == "handler 'h' raised ValueError: \\udcff!"
        assert stored.traceback is not None
        assert "\\udcff" in stored.traceback

    def test_a_record_s_repr_shows_no_reason_or_traceback(self, store: DeadLetterStore) -> None:
        put(store, missive.RawMessage(b"x", b"id-1"), failure("SECRET-REASON"))

        assert "SECRET" not in repr(store.record(b"id-1"))

    def test_a_closed_store_raises_dlq_error(self, store: DeadLetterStore) -> None:
        store.close()

        with pytest.raises(missive.DLQError, match="closed"):
            len(store)

    def test_close_is_idempotent(self, store: DeadLetterStore) -> None:
        store.close()

        store.close()

    def test_a_with_block_closes_the_store(self, store: DeadLetterStore) -> None:
        with store as entered:
            put(entered, missive.RawMessage(b"x", b"id-1"))

        with pytest.raises(missive.DLQError):
            put(store, missive.RawMessage(b"x", b"id-2"))
