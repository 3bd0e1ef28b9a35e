"""The processing events: what an observer sees for each outcome, and in what order."""

import logging
from typing import Any

import pytest

import missive
from missive.events import Observer, Observers

Ctx = missive.HandlingContext[Any]
PCtx = missive.ProcessingContext[Any]


class Recorder(Observer):
    """Records each processing event with what it was given."""

    def __init__(self, log: list[tuple[Any, ...]]) -> None:
        self.log = log

    def handling_started(self, pctx: PCtx, hctx: Ctx) -> None:
        self.log.append(("started", hctx.message.message_id, hctx.handler_name))

    def handling_finished(
        self, pctx: PCtx, hctx: Ctx, outcome: missive.Outcome | None, duration: float
    ) -> None:
        assert duration >= 0.0
        failure = None if hctx.failure is None else hctx.failure.summary
        self.log.append(("finished", hctx.handler_name, outcome, failure))

    def dead_lettered(self, message: missive.Message, reason: missive.DeadLetterReason) -> None:
        self.log.append(("dead_lettered", message.message_id, reason.summary))

    def dlq_write_failed(
        self,
        message: missive.Message,
        reason: missive.DeadLetterReason,
        error: BaseException | None,
    ) -> None:
        self.log.append(("dlq_write_failed", reason.summary, error))


def observed(handler: Any, log: list[tuple[Any, ...]]) -> missive.Processor[missive.Message]:
    processor: missive.Processor[missive.Message] = missive.Processor()
    processor.handle_for(lambda m: True)(handler)
    processor.add_observer(Recorder(log))
    return processor


def acks(message: missive.Message, ctx: Ctx) -> None:
    ctx.ack()


def nacks(message: missive.Message, ctx: Ctx) -> None:
    ctx.nack()


def fails(message: missive.Message, ctx: Ctx) -> None:
    raise ValueError("secret payload detail")


MESSAGE = missive.RawMessage(b"x", b"id-1")
FAILED = "handler 'fails' raised ValueError"


def test_an_acked_message_is_started_then_finished_acked() -> None:
    log: list[tuple[Any, ...]] = []
    processor = observed(acks, log)
    processor.before_handling(lambda p, h: log.append(("before_handling",)))
    processor.after_handling(lambda p, h: log.append(("after_handling",)))

    outcome = processor.test_client().send(MESSAGE)

    assert outcome is missive.Outcome.ACKED
    assert log == [
        ("started", b"id-1", None),
        ("before_handling",),
        ("after_handling",),
        ("finished", "acks", missive.Outcome.ACKED, None),
    ]


def test_a_nacked_message_is_finished_nacked() -> None:
    log: list[tuple[Any, ...]] = []

    observed(nacks, log).test_client().send(MESSAGE)

    assert log == [
        ("started", b"id-1", None),
        ("finished", "nacks", missive.Outcome.NACKED, None),
    ]


def test_a_handler_that_raises_is_finished_with_no_outcome_then_dead_lettered() -> None:
    log: list[tuple[Any, ...]] = []
    processor = observed(fails, log)
    processor.set_dlq({})

    outcome = processor.test_client().send(MESSAGE)

    assert outcome is missive.Outcome.DEAD_LETTERED
    assert log == [
        ("started", b"id-1", None),
        ("finished", "fails", None, FAILED),
        ("dead_lettered", b"id-1", FAILED),
    ]


def test_a_message_no_handler_settles_is_dead_lettered_with_the_reason() -> None:
    log: list[tuple[Any, ...]] = []
    processor = observed(lambda m, ctx: None, log)
    processor.set_dlq({})

    processor.test_client().send(MESSAGE)

    reason = "handler '<lambda>' returned without acking or nacking the message"
    assert log[1:] == [("finished", "<lambda>", None, reason), ("dead_lettered", b"id-1", reason)]


def test_with_no_dlq_the_write_failure_has_no_error() -> None:
    log: list[tuple[Any, ...]] = []
    processor = observed(fails, log)

    with pytest.raises(missive.HandlingError):
        processor.test_client().send(MESSAGE)

    assert log == [
        ("started", b"id-1", None),
        ("finished", "fails", None, FAILED),
        ("dlq_write_failed", FAILED, None),
    ]


class BrokenDLQ(dict[bytes, Any]):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def __setitem__(self, key: bytes, value: Any) -> None:
        raise self.error


def test_a_dlq_write_that_raises_is_reported_with_its_error() -> None:
    log: list[tuple[Any, ...]] = []
    processor = observed(fails, log)
    error = OSError("disk full")
    processor.set_dlq(BrokenDLQ(error))

    with pytest.raises(missive.DLQWriteError):
        processor.test_client().send(MESSAGE)

    assert log[-2:] == [("finished", "fails", None, FAILED), ("dlq_write_failed", FAILED, error)]


def test_an_adapter_dead_letter_is_observed() -> None:
    log: list[tuple[Any, ...]] = []
    processor = observed(nacks, log)
    processor.set_dlq({})

    with processor.context() as context:
        context.dead_letter(MESSAGE, "nacked by its handler; stdin cannot redeliver a line")

    assert log == [
        ("dead_lettered", b"id-1", "nacked by its handler; stdin cannot redeliver a line")
    ]


class Raising(Observer):
    def handling_started(self, pctx: PCtx, hctx: Ctx) -> None:
        raise RuntimeError("observer bug")

    def handling_finished(self, *args: Any) -> None:
        raise RuntimeError("observer bug")

    def dead_lettered(self, *args: Any) -> None:
        raise RuntimeError("observer bug")


@pytest.mark.parametrize("handler", [acks, fails])
def test_an_observer_that_raises_is_logged_and_changes_no_outcome(
    handler: Any, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[tuple[Any, ...]] = []
    processor: missive.Processor[missive.Message] = missive.Processor()
    processor.handle_for(lambda m: True)(handler)
    processor.set_dlq({})
    processor.add_observer(Raising())
    processor.add_observer(Recorder(log))

    with caplog.at_level(logging.ERROR, logger="missive.events"):
        outcome = processor.test_client().send(MESSAGE)

    expected = missive.Outcome.ACKED if handler is acks else missive.Outcome.DEAD_LETTERED
    assert outcome is expected
    assert [entry[0] for entry in log][:2] == ["started", "finished"]  # the next one still sees
    records = [r for r in caplog.records if r.name == "missive.events"]
    assert records
    assert all(r.levelno == logging.ERROR for r in records)
    assert "observer Raising raised in handling_started; ignored" in records[0].getMessage()


def test_nothing_is_called_or_timed_without_an_observer(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any) -> None:
        raise AssertionError("called with no observer")

    monkeypatch.setattr(Observers, "_call", forbidden)
    monkeypatch.setattr("missive.context.perf_counter", forbidden)
    for handler, dlq in ((acks, None), (nacks, None), (fails, {})):
        processor: missive.Processor[missive.Message] = missive.Processor()
        processor.handle_for(lambda m: True)(handler)
        processor.set_dlq(dlq)
        processor.test_client().send(MESSAGE)
    no_dlq = missive.Processor()
    no_dlq.handle_for(lambda m: True)(fails)
    client = no_dlq.test_client()
    with pytest.raises(missive.HandlingError):
        client.send(MESSAGE)
