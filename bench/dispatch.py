"""Routing throughput: Missive's test client against plain Python doing the same work.

Each run decodes N JSON messages of about 100 bytes and routes each by its
``label`` field to one of H handlers, which ack it. Plain Python does the same
decode and field check and calls the same kind of function. The timings are
interleaved (plain, Missive, plain, Missive...) and the median ratio printed:
plain time / Missive time, so 1.0 means no overhead.

    python bench/dispatch.py [--messages 200000] [--repeat 5] [--handlers 2,100,1000]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import missive
from missive.matchers import JSONField


def make_payloads(count: int, labels: list[str]) -> list[bytes]:
    return [
        json.dumps(
            {"label": labels[i % len(labels)], "user": f"user-{i}", "amount": i % 97, "ok": True}
        ).encode()
        for i in range(count)
    ]


def plain_python(
    payloads: list[bytes], labels: list[str], loads: Callable[[bytes], Any]
) -> Callable[[], int]:
    handled = [0]

    def handle(doc: object) -> None:
        handled[0] += 1

    handle_first = handle_second = handle

    if len(labels) == 2:
        first, second = labels

        def run() -> int:
            for raw in payloads:
                doc = loads(raw)
                label = doc.get("label")
                if label == first:
                    handle_first(doc)
                elif label == second:
                    handle_second(doc)
            return handled[0]
    else:
        # What a person writes for many labels: one dict lookup.
        table = dict.fromkeys(labels, handle)

        def run() -> int:
            for raw in payloads:
                doc = loads(raw)
                table[doc.get("label")](doc)
            return handled[0]

    return run


Context = missive.HandlingContext[missive.JSONMessage]


class LabelIs:
    """A plain callable matcher, as the spec's HasLabelMatcher (fixed)."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, message: missive.JSONMessage) -> bool:
        label: str = message.get_json().get("label")
        return label == self.label


MATCHERS: dict[str, Callable[[str], Callable[[missive.JSONMessage], object]]] = {
    "plain": LabelIs,
    "indexed": lambda label: JSONField("label").equals(label),
}


def with_missive(
    payloads: list[bytes], labels: list[str], batch: int, matcher: str
) -> Callable[[], int]:
    """Send every payload through test clients of ``batch`` messages each."""
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()
    for label in labels:

        @processor.handle_for(MATCHERS[matcher](label))
        def handle(message: missive.JSONMessage, ctx: Context) -> None:
            ctx.ack()

    def run() -> int:
        acked = 0
        message_cls = missive.JSONMessage
        for start in range(0, len(payloads), batch):
            client = processor.test_client()
            send = client.send
            for raw in payloads[start : start + batch]:
                send(message_cls(raw))
            client.close()
            acked += len(client.acked)
        return acked

    return run


def timed(run: Callable[[], int]) -> float:
    gc.collect()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def strict_loads(raw: bytes) -> Any:
    return json.loads(raw.decode("utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--handlers", default="2,100,1000")
    parser.add_argument("--batch", type=int, default=1_000, help="messages per test client")
    parser.add_argument("--matchers", default="plain,indexed", help="plain callables, indexed")
    args = parser.parse_args()

    print(f"{args.messages} messages, {args.repeat} interleaved repetitions, medians shown")
    print("plain A: json.loads(raw)   plain B: json.loads(raw.decode()), as Missive decodes")
    print(f"missive 1: one test client for all messages (acked keeps all {args.messages} alive)")
    print(f"missive {args.batch}: a new test client every {args.batch} messages")
    print("ratio X/Y = plain time / Missive time (1.0 = no overhead), median of the pairs")
    columns = ["A", "B", "missive 1", f"missive {args.batch}"]
    ratio_names = [(p, m) for m in columns[2:] for p in columns[:2]]
    print(
        f"{'handlers':>8}  {'matchers':>8}"
        + "".join(f"  {name + ' µs':>{max(10, len(name) + 3)}}" for name in columns)
        + "".join(f"  {f'{p}/{m}':>{len(p) + len(m) + 1}}" for p, m in ratio_names)
    )
    rows = [(int(h), m) for h in args.handlers.split(",") for m in args.matchers.split(",")]
    runs: dict[tuple[int, str], dict[str, Callable[[], int]]] = {}
    for handlers, matcher in rows:
        labels = [f"label-{i}" for i in range(handlers)]
        payloads = make_payloads(args.messages, labels[:2] if handlers == 2 else labels)
        runs[handlers, matcher] = {
            "A": plain_python(payloads, labels, json.loads),
            "B": plain_python(payloads, labels, strict_loads),
            "missive 1": with_missive(payloads, labels, len(payloads), matcher),
            f"missive {args.batch}": with_missive(payloads, labels, args.batch, matcher),
        }
        for name in columns[2:]:
            assert runs[handlers, matcher][name]() == len(payloads), "every message must be acked"

    # Every run of every row, interleaved, so that drift in the machine's speed
    # touches all of them alike.
    times: dict[tuple[tuple[int, str], str], list[float]] = {
        (row, name): [] for row in rows for name in columns
    }
    for _ in range(args.repeat):
        for row in rows:
            for name, run in runs[row].items():
                times[row, name].append(timed(run))

    per = 1e6 / args.messages
    median = statistics.median
    for row in rows:
        handlers, matcher = row
        print(
            f"{handlers:>8}  {matcher:>8}"
            + "".join(
                f"  {median(times[row, name]) * per:>{max(10, len(name) + 3)}.2f}"
                for name in columns
            )
            + "".join(
                f"  {median(_ratios(times[row, p], times[row, m])):>{len(p) + len(m) + 1}.3f}"
                for p, m in ratio_names
            )
        )

    # Routing at scale: Missive's throughput with many handlers against two.
    batch = columns[3]
    base = (2, "plain")
    if base in runs:
        print(f"\nthroughput against 2 plain handlers ({batch}), median of the pairs:")
        for row in rows:
            ratio = median(_ratios(times[base, batch], times[row, batch]))
            print(f"  {row[0]:>5} {row[1]:<8} {ratio:.3f}")


def _ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """Per repetition, numerator / denominator: the pairs are taken in the same round."""
    return [n / d for n, d in zip(numerators, denominators, strict=True)]

if __name__ == "__main__":
    main()
