"""Property: whatever handlers do, every message ends in exactly one known state.

Each message is acked, nacked, dead-lettered (stored, then acked on the transport),
or not acked with the error raised to the adapter. None is both acked and lost.
"""

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import missive

Ctx = missive.HandlingContext[Any]
BEHAVIOURS = ["ack", "nack", "raise", "no-match", "several", "settle-nothing", "ack-twice"]


class FlakyDLQ(dict[bytes, tuple[missive.Message, str]]):
    """A DLQ whose writes fail for the messages whose attributes say so."""

    def __setitem__(self, key: bytes, value: tuple[missive.Message, str]) -> None:
        if value[0].attributes["dlq_fails"]:
            raise OSError("disk full")
        super().__setitem__(key, value)


def build_processor() -> missive.Processor[missive.Message]:
    processor: missive.Processor[missive.Message] = missive.Processor()

    def behaviour(message: missive.Message) -> str:
        return message.raw_data.decode()

    @processor.handle_for(lambda m: behaviour(m) in {"ack", "nack", "raise", "several"})
    def main(message: missive.Message, ctx: Ctx) -> None:
        what = behaviour(message)
        if what == "raise":
            raise RuntimeError("handler failed")
        if what == "nack":
            ctx.nack()
        else:
            ctx.ack()

    @processor.handle_for(lambda m: behaviour(m) == "several")
    def overlapping(message: missive.Message, ctx: Ctx) -> None:
        ctx.ack()

    @processor.handle_for(lambda m: behaviour(m) in {"settle-nothing", "ack-twice"})
    def careless(message: missive.Message, ctx: Ctx) -> None:
        if behaviour(message) == "ack-twice":
            ctx.ack()
            ctx.ack()

    return processor


messages = st.lists(
    st.tuples(st.sampled_from(BEHAVIOURS), st.booleans()), min_size=1, max_size=30
)


@settings(max_examples=200, deadline=None)
@given(messages=messages, with_dlq=st.booleans())
def test_every_message_ends_in_exactly_one_state(
    messages: list[tuple[str, bool]], with_dlq: bool
) -> None:
    processor = build_processor()
    dlq = FlakyDLQ()
    if with_dlq:
        processor.set_dlq(dlq)
    client = processor.test_client()
    raised: list[missive.Message] = []
    sent = []
    for what, dlq_fails in messages:
        message = missive.RawMessage(what.encode(), attributes={"dlq_fails": dlq_fails})
        sent.append((message, what, dlq_fails))
        try:
            client.send(message)
        except (missive.HandlingError, missive.DLQWriteError):
            raised.append(message)

    for message, what, dlq_fails in sent:
        states = [
            message in client.acked,
            message in client.nacked,
            message in client.dead_lettered,
            message in raised,
        ]
        assert states.count(True) == 1, (what, states)
        if what == "ack":
            assert message in client.acked
        elif what == "nack":
            assert message in client.nacked
        elif with_dlq and not dlq_fails:
            assert message in client.dead_lettered
            assert message.message_id in dlq
        else:
            assert message in raised
            assert message.message_id not in dlq
    assert len(set(client.acked)) == len(client.acked)
