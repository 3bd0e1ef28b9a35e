"""The consumers of ``bench/concurrency.py``: one timed run, in a process of its own.

``bench/concurrency.py`` pre-publishes the messages, then starts this module as
``python bench/concurrency_consumers.py SPEC`` (``SPEC`` is :meth:`Spec.to_json`) and
reads one line of JSON back: :class:`Outcome`. Each run gets a fresh interpreter, so
that no library's global state (Dramatiq's brokers, event loops, threads left behind)
carries over to the next run.

Every handler waits 20 ms (``time.sleep`` or ``asyncio.sleep``) and acks. The clock
starts when the consumer starts (connecting included) and stops when the last message
is settled, as each library lets us see it:

* **Missive**: the handler counts its acks; when the count reaches the total a thread
  calls ``adapter.stop()``, and the clock stops when ``run()`` returns (its last acks
  sent and its connection closed), the strictest of the three.
* **Dramatiq**: an ``after_ack`` middleware counts the acks its consumer sent; the
  clock stops at the last (``Worker.stop()``, which waits up to ``worker_timeout``,
  1 s, for its idle threads, is not counted).
* **FastStream**: the handler awaits ``message.ack()`` itself (FastStream then does
  not ack again); the clock stops when the last ack returned (``broker.stop()`` is
  not counted).

Whether everything was settled is checked afterwards, on the broker, by the parent.

This module deliberately has no ``from __future__ import annotations``: FastStream reads
its handlers' annotations at run time, and those are imported inside the functions.
"""

import asyncio
import inspect
import json
import logging
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
#: What every handler waits, in seconds.
SLEEP = 0.02
#: The consumer group of every Redis Streams run (created by the parent at id 0).
GROUP = "bench"
#: Dramatiq's actor, and its queue in a Redis run (the namespace is the run's name).
ACTOR = "bench_sleep"
DRAMATIQ_REDIS_QUEUE = "bench"
#: A run in which no message is settled for this many seconds is given up.
STALL = 15.0


@dataclass(frozen=True)
class Spec:
    """One measurement: which consumer, on which broker, how concurrent, how many."""

    broker: str  # "rabbitmq" or "redis"
    library: str  # "missive", "dramatiq" or "faststream"
    mode: str  # "sync" or "async"
    concurrency: int
    count: int
    name: str  # the run's queue or stream (or Dramatiq's Redis namespace)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Spec":
        return cls(**json.loads(text))


@dataclass
class Outcome:
    """What one run measured."""

    seconds: float  # consumer start to the last message settled
    handled: int  # messages settled (acked) in that time
    cpu: float  # this process's CPU seconds (all threads) over the same span
    machine: float  # the share of all the machine's CPUs busy over the same span
    first: float = float("nan")  # consumer start to the first message settled
    note: str = ""


class Countdown:
    """Counts settled messages from any thread; notes the time of the first and last."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.first = self.at = 0.0
        self.done = threading.Event()
        self.errors: dict[str, int] = {}
        self._lock = threading.Lock()
        self._progress = time.monotonic()

    def tick(self) -> None:
        with self._lock:
            self.count += 1
            self._progress = time.monotonic()
            if self.count == 1:
                self.first = time.perf_counter()
            if self.count == self.total:
                self.at = time.perf_counter()
                self.done.set()

    def failed(self, exc: BaseException) -> None:
        """Note an exception a handler raised (the library's logging is off)."""
        with self._lock:
            name = type(exc).__name__
            self.errors[name] = self.errors.get(name, 0) + 1

    def finished(self, deadline: float) -> bool:
        """Whether to stop waiting: all settled, past ``deadline``, or stalled for STALL s."""
        now = time.monotonic()
        return self.done.is_set() or now > deadline or now - self._progress > STALL

    def wait(self, seconds: float) -> None:
        """Block until :meth:`finished`, at most ``seconds`` from now."""
        deadline = time.monotonic() + seconds
        while not self.finished(deadline):
            self.done.wait(0.05)

    def describe(self, note: str = "") -> str:
        errors = ", ".join(f"{n} {name}" for name, n in self.errors.items())
        return "; ".join(part for part in (note, errors and f"handler errors: {errors}") if part)


class Clock:
    """Wall, process CPU and machine CPU from :meth:`start` to :meth:`stop`."""

    def start(self) -> None:
        self.wall, self.cpu, self.machine = time.perf_counter(), time.process_time(), _cpu_ticks()

    def stop(self, at: float | None = None) -> tuple[float, float, float]:
        """(wall s, CPU s, machine busy share); the wall time ends at ``at`` if given."""
        end = time.perf_counter() if at is None else at
        busy0, total0 = self.machine
        busy1, total1 = _cpu_ticks()
        share = (busy1 - busy0) / (total1 - total0) if total1 > total0 else float("nan")
        return end - self.wall, time.process_time() - self.cpu, share


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat (Linux)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def limit(spec: Spec) -> float:
    """How long a run may take before it is given up: ten times the ideal, plus 60 s."""
    return spec.count * SLEEP / spec.concurrency * 10 + 60


# -- Missive -----------------------------------------------------------------------------


def missive_has_concurrency(broker: str) -> bool:
    """Whether this tree's adapter for ``broker`` takes ``concurrency=``."""
    if broker == "rabbitmq":
        from missive.adapters.rabbitmq import RabbitMQAdapter as Adapter
    else:
        from missive.adapters.redis import RedisStreamsAdapter as Adapter
    return "concurrency" in inspect.signature(Adapter.__init__).parameters


def run_missive(spec: Spec) -> Outcome:
    import missive

    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    settled = Countdown(spec.count)
    if spec.mode == "sync":

        @processor.handle_for(lambda m: True)
        def handle(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
            time.sleep(SLEEP)
            ctx.ack()
            settled.tick()

    else:

        @processor.handle_for(lambda m: True)
        async def handle_async(
            message: missive.RawMessage, ctx: missive.HandlingContext[Any]
        ) -> None:
            await asyncio.sleep(SLEEP)
            ctx.ack()
            settled.tick()

    # Concurrency 1 also runs on a tree without the argument: that is today's loop.
    options: dict[str, Any] = {}
    if missive_has_concurrency(spec.broker):
        options["concurrency"] = spec.concurrency
    elif spec.concurrency != 1:
        raise SystemExit("this tree's adapters take no concurrency argument")
    adapter: missive.Adapter[Any]
    if spec.broker == "rabbitmq":
        from missive.adapters.rabbitmq import RabbitMQAdapter

        adapter = RabbitMQAdapter(missive.RawMessage, processor, spec.name, url=AMQP_URL, **options)
    else:
        from missive.adapters.redis import RedisStreamsAdapter

        adapter = RedisStreamsAdapter(
            missive.RawMessage, processor, spec.name, group=GROUP, url=REDIS_URL, **options
        )

    def stop_when_done() -> None:
        settled.wait(limit(spec))
        adapter.stop()

    threading.Thread(target=stop_when_done, daemon=True).start()
    clock = Clock()
    clock.start()
    adapter.run()
    seconds, cpu, machine = clock.stop()
    return Outcome(seconds, settled.count, cpu, machine, settled.first - clock.wall)


# -- Dramatiq ----------------------------------------------------------------------------


def dramatiq_broker(spec: Spec) -> Any:
    """A Dramatiq broker for the run (the parent publishes through one too)."""
    if spec.broker == "rabbitmq":
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=AMQP_URL)
    from dramatiq.brokers.redis import RedisBroker

    return RedisBroker(url=REDIS_URL, namespace=spec.name)  # type: ignore[no-untyped-call]


def dramatiq_queue(spec: Spec) -> str:
    """The Dramatiq queue of the run: its own name on RabbitMQ, a fixed one in Redis."""
    return spec.name if spec.broker == "rabbitmq" else DRAMATIQ_REDIS_QUEUE


def dramatiq_actor(broker: Any, spec: Spec) -> Any:
    """The actor: sleeps 20 ms. Declared alike by the parent and the consumer."""
    import dramatiq

    def bench_sleep() -> None:
        time.sleep(SLEEP)

    decorate = dramatiq.actor(actor_name=ACTOR, queue_name=dramatiq_queue(spec), broker=broker)
    return decorate(bench_sleep)


def run_dramatiq(spec: Spec) -> Outcome:
    import dramatiq

    settled = Countdown(spec.count)

    class Settled(dramatiq.Middleware):
        def after_ack(self, broker: Any, message: Any) -> None:
            settled.tick()

    broker = dramatiq_broker(spec)
    broker.add_middleware(Settled())
    dramatiq_actor(broker, spec)
    worker = dramatiq.Worker(broker, worker_threads=spec.concurrency)
    clock = Clock()
    clock.start()
    worker.start()
    settled.wait(limit(spec))
    seconds, cpu, machine = clock.stop(settled.at or None)
    worker.stop()
    broker.close()
    note = f"prefetch {worker.queue_prefetch}"
    return Outcome(seconds, settled.count, cpu, machine, settled.first - clock.wall, note)


# -- FastStream --------------------------------------------------------------------------


def run_faststream(spec: Spec) -> Outcome:
    return asyncio.run(_faststream(spec))


async def _faststream(spec: Spec) -> Outcome:
    settled = Countdown(spec.count)
    broker: Any
    if spec.broker == "rabbitmq":
        from faststream.rabbit import Channel, RabbitBroker, RabbitQueue
        from faststream.rabbit.annotations import RabbitMessage

        broker = RabbitBroker(AMQP_URL, logger=None)
        note = f"Channel(prefetch_count={spec.concurrency})"

        # aio-pika runs each delivery in a task of its own: prefetch bounds concurrency.
        @broker.subscriber(
            RabbitQueue(spec.name, declare=False),
            channel=Channel(prefetch_count=spec.concurrency),
        )
        async def on_rabbit(body: Any, message: RabbitMessage) -> None:
            try:
                await asyncio.sleep(SLEEP)
                await message.ack()
            except Exception as exc:
                settled.failed(exc)
                raise
            settled.tick()

    else:
        from faststream.redis import RedisBroker, StreamSub
        from faststream.redis.annotations import RedisStreamMessage

        broker = RedisBroker(REDIS_URL, logger=None)  # type: ignore[arg-type]
        # Each read takes as many entries as Missive's (its batch size follows concurrency).
        records = max(100, 2 * spec.concurrency)
        note = f"max_workers={spec.concurrency}, max_records={records}"

        @broker.subscriber(
            stream=StreamSub(spec.name, group=GROUP, consumer="fs", max_records=records),
            max_workers=spec.concurrency,
        )
        async def on_stream(body: Any, message: RedisStreamMessage) -> None:
            try:
                await asyncio.sleep(SLEEP)
                await message.ack()
            except Exception as exc:
                settled.failed(exc)
                raise
            settled.tick()

    clock = Clock()
    clock.start()
    await broker.start()
    deadline = time.monotonic() + limit(spec)
    while not settled.finished(deadline):
        await asyncio.sleep(0.005)
    seconds, cpu, machine = clock.stop(settled.at or None)
    await broker.stop()
    first = settled.first - clock.wall
    return Outcome(seconds, settled.count, cpu, machine, first, settled.describe(note))


RUNNERS = {"missive": run_missive, "dramatiq": run_dramatiq, "faststream": run_faststream}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    spec = Spec.from_json(sys.argv[1])
    outcome = RUNNERS[spec.library](spec)
    print(json.dumps(asdict(outcome)), flush=True)


if __name__ == "__main__":
    main()
