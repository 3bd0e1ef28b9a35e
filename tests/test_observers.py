"""missive.events: the no-op Observer and the Observers fan-out."""

import logging
from typing import Any

import pytest

import missive
from missive.events import Observer, Observers

EVENTS = [
    ("worker_started", (object(),)),
    ("worker_stopping", (object(),)),
    ("connection_lost", ("redis://localhost", OSError("down"), 0.5)),
    ("connection_restored", ("redis://localhost",)),
    ("polled", (0,)),
    ("backlog", (12,)),
    ("message_received", (missive.RawMessage(b"x"), 1)),
    ("handling_started", (None, None)),
    ("handling_finished", (None, None, None, 0.1)),
    ("acked", (missive.RawMessage(b"x"),)),
    ("requeued", (missive.RawMessage(b"x"), 0.0)),
    ("retried", (missive.RawMessage(b"x"), 1.5)),
    ("dead_lettered", (missive.RawMessage(b"x"), missive.DeadLetterReason("r"))),
    ("dlq_write_failed", (missive.RawMessage(b"x"), missive.DeadLetterReason("r"), None)),
    ("lost", (missive.RawMessage(b"x"), missive.MissiveError("gone"))),
    ("handed_back", (3,)),
]


@pytest.mark.parametrize(("event", "args"), EVENTS)
def test_every_observer_method_is_a_no_op(event: str, args: tuple[Any, ...]) -> None:
    assert getattr(Observer(), event)(*args) is None


class Calls(Observer):
    def __init__(self, name: str, log: list[tuple[str, str, tuple[Any, ...]]]) -> None:
        self.name = name
        self.log = log

    def __getattribute__(self, attr: str) -> Any:
        if attr in dict(EVENTS):
            return lambda *args: self.log.append((self.name, attr, args))
        return super().__getattribute__(attr)


@pytest.mark.parametrize(("event", "args"), EVENTS)
def test_observers_call_each_observer_in_order_with_the_arguments(
    event: str, args: tuple[Any, ...]
) -> None:
    log: list[tuple[str, str, tuple[Any, ...]]] = []
    observers = Observers()
    observers.add(Calls("first", log))
    observers.add(Calls("second", log))

    getattr(observers, event)(*args)

    assert log == [("first", event, args), ("second", event, args)]


def test_observers_are_falsy_until_one_is_added() -> None:
    observers = Observers()
    assert not observers
    assert len(observers) == 0
    observers.add(Observer())
    assert observers
    assert len(observers) == 1


def test_only_an_observer_can_be_added() -> None:
    with pytest.raises(TypeError, match=r"missive\.events\.Observer, not function"):
        Observers().add(lambda: None)  # type: ignore[arg-type]


def test_add_observer_registers_on_the_processor_and_returns_it() -> None:
    processor = missive.Processor()
    observer = Observer()
    assert processor.add_observer(observer) is observer
    assert len(processor.observers) == 1


class Failing(Observer):
    def acked(self, message: missive.Message) -> None:
        raise ValueError("bug")


def test_an_exception_is_logged_with_the_observer_and_event_then_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[tuple[str, str, tuple[Any, ...]]] = []
    observers = Observers()
    observers.add(Failing())
    observers.add(Calls("after", log))

    with caplog.at_level(logging.ERROR, logger="missive.events"):
        observers.acked(missive.RawMessage(b"x"))

    assert [entry[:2] for entry in log] == [("after", "acked")]
    [record] = caplog.records
    assert record.name == "missive.events"
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "observer Failing raised in acked; ignored"
    assert record.exc_info is not None


def test_a_keyboard_interrupt_from_an_observer_is_not_swallowed() -> None:
    class Interrupting(Observer):
        def handed_back(self, count: int) -> None:
            raise KeyboardInterrupt

    observers = Observers()
    observers.add(Interrupting())
    with pytest.raises(KeyboardInterrupt):
        observers.handed_back(1)
