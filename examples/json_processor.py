"""The demo: a JSON event processor reading stdin, with an SQLite dead-letter queue.

Run it with ``make demo``, or by hand::

    python examples/json_processor.py .demo/dlq.db < examples/sample_messages.jsonl

Sign-ins and purchases are handled; anything else (an unknown label, invalid JSON,
a purchase its handler rejects) ends in the DLQ with the reason, and is acked.
"""

import logging
import sys
from collections import Counter
from pathlib import Path

import missive
from missive.adapters.stdin import StdinAdapter
from missive.dlq.sqlite import SQLiteDLQ


class HasLabel:
    """Matches JSON messages whose "label" field equals the given label."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, message: missive.JSONMessage) -> bool:
        return bool(message.get_json().get("label") == self.label)

    def __repr__(self) -> str:
        return f"HasLabel({self.label!r})"


Ctx = missive.HandlingContext[missive.JSONMessage]
processor: missive.Processor[missive.JSONMessage] = missive.Processor()
handled: Counter[str] = Counter()


@processor.handle_for(HasLabel("sign-in"))
def record_sign_in(message: missive.JSONMessage, ctx: Ctx) -> None:
    handled["sign-in"] += 1
    ctx.ack()


@processor.handle_for(HasLabel("purchase"))
def record_purchase(message: missive.JSONMessage, ctx: Ctx) -> None:
    amount = message.get_json()["amount"]
    if amount < 0:
        raise ValueError("a purchase amount cannot be negative")
    handled["purchase"] += 1
    ctx.ack()


def main(dlq_path: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)-7s %(name)s: %(message)s")
    Path(dlq_path).parent.mkdir(parents=True, exist_ok=True)
    with SQLiteDLQ(dlq_path) as dlq:
        processor.set_dlq(dlq)
        StdinAdapter(missive.JSONMessage, processor).run()

        print(f"Handled {sum(handled.values())} messages:")
        for label, count in sorted(handled.items()):
            print(f"  {label:<10} {count}")
        print(f"\n{len(dlq)} messages in the dead-letter queue ({dlq_path}):")
        for letter in dlq.records():
            line = letter.message.attributes.get("line", "?")
            print(f"  line {line:>2}  {letter.size:>3} bytes  {letter.reason}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".demo/dlq.db")
