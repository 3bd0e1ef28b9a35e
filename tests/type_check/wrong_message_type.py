"""mypy must reject this: a RawMessage handler on a JSONMessage processor's message."""

from typing import Any

import missive

raw_processor: missive.Processor[missive.RawMessage] = missive.Processor()


@raw_processor.handle_for(lambda m: True)
def handler(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
    ctx.ack()
