"""Type-checked usage (mypy --strict must accept this file as it is)."""

import missive

json_processor: missive.Processor[missive.JSONMessage] = missive.Processor()
untyped = missive.Processor()


@json_processor.handle_for(lambda m: m.get_json().get("label") == "sign-in")
def record(message: missive.JSONMessage, ctx: missive.HandlingContext[missive.JSONMessage]) -> None:
    message.get_json()
    ctx.ack()


@untyped.handle_for(lambda m: m.raw_data == b"Hello")
def greet(message: missive.Message, ctx: missive.HandlingContext[missive.Message]) -> None:
    ctx.ack()


@json_processor.before_handling
def start(
    processing_ctx: missive.ProcessingContext[missive.JSONMessage],
    handling_ctx: missive.HandlingContext[missive.JSONMessage],
) -> None:
    handling_ctx.state.start_time = 1.0


client = json_processor.test_client()
outcome: missive.Outcome = client.send(missive.JSONMessage(b"{}"))
acked: list[missive.JSONMessage] = client.acked

# A plain callable is a MatcherFunc; an indexed matcher is a missive.Matcher, and
# a Matcher is also a MatcherFunc.
is_prefixed: missive.Matcher = missive.matchers.RawPrefix(b"{")
matchers: list[missive.MatcherFunc[missive.JSONMessage]] = [lambda m: m.raw_data == b"{}"]
matchers.append(is_prefixed)
