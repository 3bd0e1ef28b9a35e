"""The CPU-bound application of ``bench/concurrency.py``, for ``missive run``.

    MISSIVE_BENCH_QUEUE=q MISSIVE_BENCH_SPIN=20000 MISSIVE_BENCH_PROGRESS=/tmp/p \\
        python -m missive run bench.concurrency_app:factory --workers 2

Each message's handler spins a loop of ``MISSIVE_BENCH_SPIN`` rounds (the benchmark
calibrates it to about 1 ms of CPU), acks, and appends one byte to the file
``MISSIVE_BENCH_PROGRESS`` (its worker's number, ``MISSIVE_WORKER``, last digit), which
the benchmark watches to know how many messages were handled, and by which worker.
"""

from __future__ import annotations

import os
from typing import Any

import missive
from missive.adapters.rabbitmq import RabbitMQAdapter


def spin(rounds: int) -> int:
    """Burn CPU: ``rounds`` turns of a small arithmetic loop."""
    total = 0
    for i in range(rounds):
        total += i * i % 7
    return total


def factory() -> RabbitMQAdapter[missive.RawMessage]:
    """A RabbitMQAdapter on ``MISSIVE_BENCH_QUEUE`` whose one handler spins, then acks."""
    rounds = int(os.environ["MISSIVE_BENCH_SPIN"])
    progress = os.open(os.environ["MISSIVE_BENCH_PROGRESS"], os.O_WRONLY | os.O_APPEND)
    mark = os.environ.get("MISSIVE_WORKER", "1")[-1].encode()
    processor: missive.Processor[missive.RawMessage] = missive.Processor()

    @processor.handle_for(lambda m: True)
    def burn(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        spin(rounds)
        ctx.ack()
        os.write(progress, mark)

    return RabbitMQAdapter(
        missive.RawMessage,
        processor,
        os.environ["MISSIVE_BENCH_QUEUE"],
        url=os.environ.get("AMQP_URL"),
    )
