"""Concurrent handlers: Missive's delivery loop against Dramatiq and FastStream.

**Waiting handlers.** Every handler waits 20 ms (``time.sleep`` in a sync handler,
``asyncio.sleep`` in an async one) and acks. For each broker (RabbitMQ, and Redis:
Streams for Missive and FastStream, Dramatiq's own list-based protocol for Dramatiq)
and each concurrency C (1, 8, 32, 128), four consumers run in one worker process each:

* **missive sync** and **missive async**: ``RabbitMQAdapter`` / ``RedisStreamsAdapter``
  with ``concurrency=C`` (prefetch and batch size left to follow it);
* **dramatiq**: a ``Worker`` with ``worker_threads=C`` and its own prefetch (2 C);
* **faststream** (async): on Redis Streams its ``max_workers=C`` option (reading as
  many entries at a time as Missive: ``max_records`` = 100 or 2 C); on RabbitMQ it has
  no such option, but aio-pika runs each delivery in a task of its own, so
  ``Channel(prefetch_count=C)`` is its concurrency.

Each run pre-publishes its messages (5,000; 250 at concurrency 1, which would
otherwise take 100 s) to a fresh queue or stream, in the library's own format, then
starts the consumer in a fresh process and times it from its start to the last ack
(see ``bench/concurrency_consumers.py`` for how each library's last ack is seen), and
checks on the broker that nothing was left unacked. Repetitions are interleaved: for
each repetition, each concurrency, each broker, the four consumers in turn (each
repetition starting with the next). The table gives medians, each as a share of the
ideal, C / 20 ms messages a second, the consumer's CPU (1.0 = one core: the GIL's
limit) and the machine's (both CPUs, broker included), and each Missive row's ratio
to Dramatiq and FastStream at the same concurrency.

**CPU-bound handlers.** Each handler spins about 1 ms of CPU and acks; 10,000 messages on
RabbitMQ are consumed by ``python -m missive run bench.concurrency_app:factory
--workers 1`` and ``--workers 2``, interleaved; the rate is counted once every worker
has handled a message, until the last one is handled.

    .venv/bin/python bench/concurrency.py                  # the full run, about 15-20 minutes
    .venv/bin/python bench/concurrency.py --quick          # a smoke run, about a minute
    .venv/bin/python bench/concurrency.py --brokers redis --concurrency 8,32 --repeat 5

Needs RabbitMQ on ``AMQP_URL`` and Redis on ``REDIS_URL`` (defaults: local), and
``pip install -e '.[bench]'`` (Dramatiq and FastStream). Missive rows whose adapter
takes no ``concurrency`` argument yet are shown as not available (concurrency 1 runs
today's loop).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pika
from concurrency_app import spin
from concurrency_consumers import AMQP_URL, SLEEP, Clock, Outcome, Spec, limit
from concurrency_consumers import missive_has_concurrency as has_concurrency
from concurrency_queues import BODY, delete, fill, unsettled

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONCURRENCIES = (1, 8, 32, 128)
BROKERS = ("rabbitmq", "redis")
#: (library, mode) of each consumer, in the order of a repetition.
CONTENDERS = (
    ("missive", "sync"),
    ("missive", "async"),
    ("dramatiq", "sync"),
    ("faststream", "async"),
)
PEERS = ("dramatiq", "faststream")
#: The targets: the least share of the ideal at each concurrency (none at 1).
TARGETS = {8: 0.95, 32: 0.95, 128: 0.8}
#: A consumer using this much of a core, or a machine this busy, is CPU-bound.
CPU_BOUND = 0.9

Key = tuple[str, str, str, int]  # broker, library, mode, concurrency


@dataclass
class Samples:
    """The runs of one row of the table."""

    count: int
    outcomes: list[Outcome] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return float(statistics.median(getattr(o, attribute) for o in self.outcomes))

    @property
    def rate(self) -> float:
        """Median messages a second, or nan without a good run."""
        if not self.outcomes:
            return float("nan")
        return statistics.median(o.handled / o.seconds for o in self.outcomes)


# -- Waiting handlers --------------------------------------------------------------------


def measure(spec: Spec) -> Outcome | str:
    """One run of ``spec``: its outcome, or what went wrong."""
    try:
        fill(spec)
        try:
            child = subprocess.run(
                [sys.executable, str(HERE / "concurrency_consumers.py"), spec.to_json()],
                capture_output=True,
                text=True,
                timeout=limit(spec) + 60,
                check=False,
                cwd=REPO,
            )
        except subprocess.TimeoutExpired:
            return f"no answer in {limit(spec) + 60:.0f} s"
        if child.returncode:
            last = (child.stderr.strip().splitlines() or ["no output"])[-1]
            return f"exit {child.returncode}: {last[:200]}"
        outcome = Outcome(**json.loads(child.stdout.strip().splitlines()[-1]))
        left = unsettled(spec)
    finally:
        delete(spec)
    if outcome.handled != spec.count or left:
        text = f"acked {outcome.handled} of {spec.count}; {left} left unacked on the broker"
        return f"{text} ({outcome.note})" if outcome.note else text
    return outcome


def run_waiting(
    brokers: list[str],
    contenders: list[tuple[str, str]],
    concurrencies: list[int],
    messages: int,
    messages_c1: int,
    repeat: int,
) -> dict[Key, Samples]:
    """Every row's runs, interleaved as the module's docstring says."""
    rows: dict[Key, Samples] = {}
    available = {broker: has_concurrency(broker) for broker in brokers}
    for repetition in range(repeat):
        shift = repetition % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        for concurrency in concurrencies:
            count = messages_c1 if concurrency == 1 else messages
            for broker in brokers:
                for library, mode in order:
                    key = (broker, library, mode, concurrency)
                    samples = rows.setdefault(key, Samples(count))
                    if library == "missive" and concurrency > 1 and not available[broker]:
                        samples.failures.append("not available")
                        continue
                    name = f"missive-bench-conc-{uuid.uuid4().hex[:10]}"
                    spec = Spec(broker, library, mode, concurrency, count, name)
                    result = measure(spec)
                    if isinstance(result, str):
                        samples.failures.append(result)
                        shown = result
                    else:
                        samples.outcomes.append(result)
                        rate = result.handled / result.seconds
                        shown = (
                            f"{rate:,.0f} msg/s ({rate * SLEEP / concurrency:.2f} of ideal), "
                            f"first ack after {result.first * 1000:.0f} ms {result.note}"
                        )
                    print(
                        f"  [{repetition + 1}/{repeat}] {broker} C={concurrency} "
                        f"{library} {mode}: {shown}",
                        file=sys.stderr,
                        flush=True,
                    )
    return {key: rows[key] for key in sorted(rows, key=_order)}


def _order(key: Key) -> tuple[int, int, int]:
    broker, library, mode, concurrency = key
    return BROKERS.index(broker), concurrency, CONTENDERS.index((library, mode))


def waiting_table(rows: dict[Key, Samples], repeat: int) -> str:
    lines = [
        f"Handlers waiting {SLEEP * 1000:.0f} ms; median of {repeat} interleaved runs; "
        f"ideal = concurrency / {SLEEP} s",
        "",
        "| broker | library | mode | concurrency | messages | msg/s | share of ideal "
        "| consumer CPU | machine CPU | vs dramatiq | vs faststream |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for (broker, library, mode, concurrency), samples in rows.items():
        if not samples.outcomes:
            reason = samples.failures[0] if samples.failures else "not run"
            lines.append(
                f"| {broker} | {library} | {mode} | {concurrency} | {samples.count:,} "
                f"| {reason} | | | | | |"
            )
            continue
        rate = samples.rate
        ratios = []
        for peer in PEERS:
            other = _peer(rows, broker, peer, concurrency)
            ratios.append(f"{rate / other:.2f}" if library == "missive" and other else "")
        flag = _limit(samples)
        lines.append(
            f"| {broker} | {library} | {mode} | {concurrency} | {samples.count:,} "
            f"| {rate:,.0f} | {rate * SLEEP / concurrency:.3f} "
            f"| {samples.median('cpu') / samples.median('seconds'):.2f}{flag[0]} "
            f"| {samples.median('machine'):.2f}{flag[1]} | {ratios[0]} | {ratios[1]} |"
        )
    failed = [
        f"  {' '.join(map(str, key))}: {failure}"
        for key, samples in rows.items()
        for failure in samples.failures
        if failure != "not available"
    ]
    lines += [
        "",
        "Consumer CPU: the consumer process's CPU s / wall s (1.0 = one core, all a GIL "
        f"allows Python code); machine CPU: the share of all {os.cpu_count()} CPUs busy "
        "(broker, consumer and anything else running); * at or above "
        f"{CPU_BOUND}.",
    ]
    for label, index in (("Consumer at a core", 0), ("Machine saturated", 1)):
        found = [
            f"{broker} {library} {mode} C={concurrency}"
            for (broker, library, mode, concurrency), samples in rows.items()
            if samples.outcomes and _limit(samples)[index]
        ]
        lines.append(f"{label}: {', '.join(found) or 'none'}.")
    if failed:
        lines += ["", "Failed runs (left out of the medians):", *failed]
    return "\n".join(lines)


def _peer(rows: dict[Key, Samples], broker: str, library: str, concurrency: int) -> float:
    samples = rows.get(
        (broker, library, "async" if library == "faststream" else "sync", concurrency)
    )
    return samples.rate if samples and samples.outcomes else 0.0


def _limit(samples: Samples) -> tuple[str, str]:
    core = samples.median("cpu") / samples.median("seconds")
    return ("*" if core >= CPU_BOUND else "", "*" if samples.median("machine") >= CPU_BOUND else "")


def verdicts(rows: dict[Key, Samples]) -> str:
    """Each Missive row against the targets: share of the ideal, and at or ahead of peers."""
    lines = ["Targets (Missive rows):"]
    for (broker, library, mode, concurrency), samples in rows.items():
        if library != "missive":
            continue
        where = f"  {broker} {mode} C={concurrency}:"
        if not samples.outcomes:
            lines.append(f"{where} no figure ({(samples.failures or ['not run'])[0]})")
            continue
        rate, found, missed = samples.rate, [], False
        share = rate * SLEEP / concurrency
        if concurrency in TARGETS:
            short = share < TARGETS[concurrency]
            missed |= short
            found.append(f"{share:.3f} of ideal ({'<' if short else '≥'} {TARGETS[concurrency]})")
        for peer in PEERS:
            other = _peer(rows, broker, peer, concurrency)
            if other:
                behind = rate < other
                missed |= behind
                found.append(f"{rate / other:.3f} of {peer}{' (behind)' if behind else ''}")
        lines.append(f"{where} {'MISSED' if missed else 'met'}: {', '.join(found)}")
    return "\n".join(lines)


# -- CPU-bound handlers ------------------------------------------------------------------


def calibrate(seconds: float = 0.001) -> int:
    """How many rounds of :func:`~concurrency_app.spin` take ``seconds`` of CPU here.

    Timed in CPU time of this thread (the median of 15), so that other jobs on the
    machine, which delay the wall clock, do not change it.
    """
    probe = 50_000
    taken = statistics.median(_timed(probe) for _ in range(15))
    return max(1, round(probe * seconds / taken))


def _timed(rounds: int) -> float:
    started = time.thread_time()
    spin(rounds)
    return time.thread_time() - started


def run_cpu_once(workers: int, count: int, rounds: int) -> tuple[float, float] | str:
    """(msg/s once every worker handles messages, machine CPU share), or what went wrong."""
    queue = f"missive-bench-cpu-{uuid.uuid4().hex[:10]}"
    with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as connection:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        for _ in range(count):
            channel.basic_publish("", queue, BODY)
    with tempfile.NamedTemporaryFile(prefix="missive-bench-cpu-") as progress:
        env = dict(
            os.environ,
            AMQP_URL=AMQP_URL,
            MISSIVE_BENCH_QUEUE=queue,
            MISSIVE_BENCH_SPIN=str(rounds),
            MISSIVE_BENCH_PROGRESS=progress.name,
        )
        command = [sys.executable, "-m", "missive", "run", "bench.concurrency_app:factory"]
        command += ["--workers", str(workers), "--log-level", "WARNING"]
        supervisor = subprocess.Popen(command, env=env, cwd=REPO, stderr=subprocess.PIPE)
        try:
            result = _watch(progress.name, workers, count, supervisor)
        finally:
            supervisor.send_signal(signal.SIGTERM)
            try:
                _, errors = supervisor.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                supervisor.kill()
                _, errors = supervisor.communicate()
    try:
        left = _left(queue)
    finally:
        with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as connection:
            connection.channel().queue_delete(queue)
    if isinstance(result, str):
        tail = errors.decode(errors="replace").strip().splitlines()[-1:] if errors else []
        return " ".join([result, *tail])[:300]
    if left:
        return f"{left} messages left unacked"
    return result


def _watch(
    path: str, workers: int, count: int, supervisor: subprocess.Popen[bytes]
) -> tuple[float, float] | str:
    """Poll the progress file: the rate from all workers busy to the last message."""
    deadline = time.monotonic() + 60 + count * 0.01
    started: tuple[float, int] | None = None
    clock = Clock()
    while time.monotonic() < deadline:
        if supervisor.poll() is not None:
            return f"the supervisor exited with {supervisor.returncode}"
        marks = Path(path).read_bytes()
        now = time.perf_counter()
        if started is None and len(set(marks)) >= workers:
            started = now, len(marks)
            clock.start()
        if len(marks) >= count:
            if started is None or count - started[1] < count // 4:
                return "too few messages handled with every worker running: raise --cpu-messages"
            _, _, machine = clock.stop()
            return (len(marks) - started[1]) / (now - started[0]), machine
        time.sleep(0.01)
    return "timed out"


def _left(queue: str) -> int:
    with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as connection:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)


def run_cpu(count: int, repeat: int) -> str:
    rounds = calibrate()
    runs: dict[int, list[tuple[float, float]]] = defaultdict(list)
    failures: list[str] = []
    for repetition in range(repeat):
        for workers in (1, 2) if repetition % 2 == 0 else (2, 1):
            result = run_cpu_once(workers, count, rounds)
            if isinstance(result, str):
                failures.append(f"  --workers {workers}: {result}")
                shown = result
            else:
                runs[workers].append(result)
                shown = f"{result[0]:,.0f} msg/s"
            print(
                f"  [{repetition + 1}/{repeat}] CPU-bound --workers {workers}: {shown}",
                file=sys.stderr,
                flush=True,
            )
    import missive
    from missive.adapters.rabbitmq import RabbitMQAdapter

    # What the application's adapter, built with the defaults, asks RabbitMQ for.
    adapter = RabbitMQAdapter(missive.RawMessage, missive.Processor(), "q", url=AMQP_URL)
    prefetch = getattr(adapter, "qos", adapter.prefetch)
    lines = [
        f"CPU-bound handlers ({rounds:,} rounds of a loop, about 1 ms here), RabbitMQ, "
        f"{count:,} messages, adapter defaults (prefetch {prefetch}), median of {repeat}",
        "",
        "| workers | msg/s | vs 1 worker | machine CPU | machine CPU ms a message |",
        "|--:|--:|--:|--:|--:|",
    ]
    one = statistics.median(r[0] for r in runs[1]) if runs[1] else float("nan")
    for workers in (1, 2):
        if not runs[workers]:
            lines.append(f"| {workers} | failed | | | |")
            continue
        rate = statistics.median(r[0] for r in runs[workers])
        machine = statistics.median(r[1] for r in runs[workers])
        per_message = machine * (os.cpu_count() or 1) / rate * 1000
        lines.append(
            f"| {workers} | {rate:,.0f} | {rate / one:.2f} | {machine:.2f} | {per_message:.2f} |"
        )
    if failures:
        lines += ["", "Failed runs:", *failures]
    return "\n".join(lines)


# -- Command line ------------------------------------------------------------------------


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", default=",".join(BROKERS), help="rabbitmq,redis")
    parser.add_argument("--concurrency", type=_numbers, default=list(CONCURRENCIES))
    parser.add_argument(
        "--contenders",
        default=",".join(f"{library}-{mode}" for library, mode in CONTENDERS),
        help="a subset of: missive-sync,missive-async,dramatiq-sync,faststream-async",
    )
    parser.add_argument("--messages", type=int, help="per run (default 5000; --quick 400)")
    parser.add_argument("--messages-c1", type=int, help="at concurrency 1 (250; --quick 25)")
    parser.add_argument("--repeat", type=int, help="interleaved repetitions (3; --quick 1)")
    parser.add_argument("--cpu-messages", type=int, help="CPU-bound case (10000; --quick 2000)")
    parser.add_argument("--skip-waiting", action="store_true", help="only the CPU-bound case")
    parser.add_argument("--skip-cpu", action="store_true", help="no CPU-bound case")
    parser.add_argument("--quick", action="store_true", help="small counts, one repetition")
    args = parser.parse_args()
    quick = args.quick
    messages = args.messages or (400 if quick else 5000)
    messages_c1 = args.messages_c1 or (25 if quick else 250)
    repeat = args.repeat or (1 if quick else 3)
    cpu_messages = args.cpu_messages or (2000 if quick else 10_000)
    brokers = [b for b in args.brokers.split(",") if b]
    for broker in brokers:
        if broker not in BROKERS:
            parser.error(f"unknown broker {broker!r}")
    wanted = {c for c in args.contenders.split(",") if c}
    known = {f"{library}-{mode}" for library, mode in CONTENDERS}
    if wanted - known:
        parser.error(f"unknown contenders: {', '.join(sorted(wanted - known))}")
    print(
        f"{messages:,} messages a run ({messages_c1:,} at concurrency 1); "
        f"{os.cpu_count()} CPUs; Python {sys.version.split()[0]}; "
        f"Missive concurrency argument: "
        + ", ".join(f"{b} {'yes' if has_concurrency(b) else 'not available'}" for b in brokers),
        flush=True,
    )
    if not args.skip_waiting:
        chosen = [(lib, mode) for lib, mode in CONTENDERS if f"{lib}-{mode}" in wanted]
        rows = run_waiting(brokers, chosen, args.concurrency, messages, messages_c1, repeat)
        print()
        print(waiting_table(rows, repeat))
        print()
        print(verdicts(rows))
    if not args.skip_cpu:
        print()
        print(run_cpu(cpu_messages, repeat), flush=True)


if __name__ == "__main__":
    main()
