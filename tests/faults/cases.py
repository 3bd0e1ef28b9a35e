"""The scenarios, written once against a :class:`~tests.faults.scenario.Run`.

``test_rabbitmq_faults.py`` and ``test_streams_faults.py`` run each one on their
broker. Every scenario publishes N messages (``MISSIVE_FAULT_N``), runs worker
processes, injects its fault mid-stream, waits until every message is handled or
dead-lettered and the broker holds none, then counts (``Run.finish`` asserts that
none was lost and records the row of the report).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable

from tests.faults.proxy import TCPProxy
from tests.faults.scenario import Counts, Run, fault_n

#: N, in every mode (see scenario.MODES).
N = fault_n()
#: How long a scenario waits for the stream to drain: generous, and bounded.
PATIENCE = 90 + N / 100
#: The per-test timeout (pytest-timeout), over every wait of a scenario.
TEST_TIMEOUT = int(3 * PATIENCE + 180)


def pace(run: Run, seconds: float, workers: int = 2) -> str:
    """The seconds a handler sleeps so that the run's N messages take ``seconds`` at least.

    A fault injected "mid-stream" then lands while workers hold messages in hand,
    even at small N; at large N the workers' own speed is the bound (FAULT_SLEEP).
    A worker running ``concurrency`` handlers at once sleeps that many times longer
    in each, so that every mode's stream lasts as long.
    """
    return str(min(0.01, seconds * workers / run.n) * run.mode.concurrency)


#: The pace of most scenarios: N messages take at least 4 s.
STREAM_SECONDS = 4
#: The share of messages whose handler raises in the scenarios with failures.
FAILING = 0.1


def _failing_actions(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["raise" if rng.random() < FAILING else "ok" for _ in range(n)]


def handlers_raise(run: Run) -> None:
    """1. Handlers raise on a random 10%: exactly those end in the DLQ, the rest are handled."""
    # Given N messages, a random 10% of which make their handler raise
    actions = _failing_actions(run.n, seed=1)
    ids = run.publish(actions)
    failing = {i for i, a in zip(ids, actions, strict=True) if a == "raise"}
    # When two workers consume them
    run.workers.start()
    run.workers.start()
    run.wait_done(PATIENCE)
    # Then the failing ones, and only those, are dead-lettered with the handler's error
    counts = run.finish()
    assert run.dead() == failing
    assert counts.handled == run.n - len(failing)
    assert counts.duplicates == 0, "no fault happened: nothing should be delivered twice"
    reasons = run.reasons()
    assert all("RuntimeError: injected failure" in reasons[i] for i in failing)


def _mid_stream(run: Run, share: float) -> None:
    run.wait_handled(int(run.n * share), PATIENCE)
    assert run.accounted() < run.n, "the stream was over before the fault: nothing was tested"


def worker_killed(run: Run) -> None:
    """2. SIGKILL a worker mid-stream, start a new one: its unacked messages are redelivered."""
    # Given two workers in the middle of N messages
    run.publish(["ok"] * run.n)
    victim = run.workers.start(FAULT_SLEEP=pace(run, STREAM_SECONDS))
    run.workers.start(FAULT_SLEEP=pace(run, STREAM_SECONDS))
    _mid_stream(run, 0.3)
    # When one is killed with SIGKILL and a new worker started
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    run.workers.start(FAULT_SLEEP=pace(run, STREAM_SECONDS))
    # Then every message is handled: what the victim held is delivered again
    run.wait_done(PATIENCE)
    counts = run.finish(note="1 worker SIGKILLed at 30%")
    assert counts.dead_lettered == 0
    assert counts.handled == run.n


def worker_terminated(run: Run) -> None:
    """3. SIGTERM a worker mid-stream: it drains and exits 0, a new one takes the rest once."""
    # Given two workers in the middle of N messages
    run.publish(["ok"] * run.n)
    leaving = run.workers.start(FAULT_SLEEP=pace(run, STREAM_SECONDS))
    run.workers.start(FAULT_SLEEP=pace(run, STREAM_SECONDS))
    _mid_stream(run, 0.3)
    # When one gets SIGTERM
    leaving.send_signal(signal.SIGTERM)
    # Then it finishes the message in hand and exits cleanly
    assert leaving.wait(30) == 0, run.workers.logs()[-3000:]
    # And with a new worker, every message is handled exactly once
    run.workers.start(FAULT_SLEEP=pace(run, STREAM_SECONDS))
    run.wait_done(PATIENCE)
    counts = run.finish(note="1 worker SIGTERMed at 30%")
    assert counts.handled == run.n
    assert counts.duplicates == 0, "a graceful stop must hand back what it did not ack"


def finish_reconnecting(run: Run, note: str) -> Counts:
    """Count (a row even if a worker died), then check that every worker is alive.

    Workers here must survive the fault by reconnecting: one that exited instead is
    named in the row's note, and fails the test after the row is recorded.
    """
    died = [p.pid for p in run.workers.processes if p.poll() is not None]
    if died:
        note += f"; {len(died)} worker(s) exited instead of reconnecting: test failed"
    counts = run.finish(note=note)
    assert not died, f"workers {died} exited instead of reconnecting:\n{run.workers.logs()[-6000:]}"
    return counts


def connections_killed(run: Run, how: str = "server-side") -> None:
    """4a. The broker drops the workers' connections, twice: they reconnect and go on.

    ``how`` says where, in the report's note (NATS: at a proxy, see ``JetStreamBroker``).
    """
    # Given two workers in the middle of N messages
    run.publish(["ok"] * run.n)
    run.workers.start(FAULT_SLEEP=pace(run, 12))  # rabbitmqctl takes a second or two
    run.workers.start(FAULT_SLEEP=pace(run, 12))
    # When the broker kills their connections at 25% and again at 50%
    for share in (0.25, 0.5):
        _mid_stream(run, share)
        # (both at once: at small N, the workers may still be handling the batch they
        # held at the first kill, not connected again yet; the second waits for them)
        run.wait(
            lambda: run.broker.kill_connections(at_least=2),
            "both workers are connected, to kill their connections",
            30,
        )
    # Then the same workers reconnect and handle everything
    run.wait_done(PATIENCE)
    counts = finish_reconnecting(run, f"connections killed {how} at 25% and 50%")
    assert counts.dead_lettered == 0
    assert counts.handled == run.n


def path_broken(run: Run) -> None:
    """4b. A proxy stalls the TCP path for 3 s, then cuts it 3 times: the workers go on."""
    with TCPProxy(run.broker.port) as proxy:
        # Given two workers connected through a proxy, in the middle of N messages
        url = run.broker.proxied_url(proxy.port)
        run.publish(["ok"] * run.n)
        run.workers.start(FAULT_SLEEP=pace(run, 8), FAULT_URL=url)
        run.workers.start(FAULT_SLEEP=pace(run, 8), FAULT_URL=url)
        # When the path stops forwarding for 3 s at 20%
        _mid_stream(run, 0.2)
        with proxy.stalled():
            time.sleep(3)
        # ...and at 40%, 60% and 80% every connection is reset, new ones for 2 s
        for share in (0.4, 0.6, 0.8):
            _mid_stream(run, share)
            before = proxy.accepted
            proxy.cut(2)
            # Then the workers reconnect through it each time
            run.wait(
                lambda: proxy.accepted >= before + len(run.workers.running()),  # noqa: B023
                "the workers reconnected",
                30,
            )
        # ...and handle everything
        run.wait_done(PATIENCE)
        counts = finish_reconnecting(run, "stalled 3 s at 20%, cut 2 s at 40%, 60%, 80%")
    assert counts.dead_lettered == 0
    assert counts.handled == run.n


def broker_restart(run: Run, restart: Callable[[], float], how: str = "") -> None:
    """5. The broker restarts mid-stream: the same workers reconnect, nothing is lost.

    ``restart`` stops the broker and starts it again (always), returning how many
    seconds it was down; ``how``, if given, says how, in the report's note.
    """
    # Given two workers in the middle of N messages the broker keeps on disk
    run.publish(["ok"] * run.n)
    run.workers.start(FAULT_SLEEP=pace(run, STREAM_SECONDS))
    run.workers.start(FAULT_SLEEP=pace(run, STREAM_SECONDS))
    _mid_stream(run, 0.3)
    # When the broker stops and starts again
    down = restart()
    # Then the same workers reconnect and handle everything that was not acked
    run.wait_done(PATIENCE)
    note = f"broker down {down:.0f} s at 30%"
    counts = finish_reconnecting(run, f"{note}; {how}" if how else note)
    assert counts.dead_lettered == 0
    assert counts.handled == run.n


def _failed_dlq_writes(run: Run) -> int:
    # Each adapter logs, for every such message, that it is not acked.
    return run.workers.logs().count("could not be written to the DLQ")


def dlq_locked(run: Run) -> None:
    """6. The DLQ is locked past its busy timeout: dead letters wait, unacked, then go in."""
    # Given N messages, 10% failing, and two workers whose DLQ waits 0.5 s for a lock
    actions = _failing_actions(run.n, seed=6)
    ids = run.publish(actions)
    failing = {i for i, a in zip(ids, actions, strict=True) if a == "raise"}
    run.workers.start(FAULT_SLEEP=pace(run, STREAM_SECONDS))
    run.workers.start(FAULT_SLEEP=pace(run, STREAM_SECONDS))
    _mid_stream(run, 0.2)
    # When another process holds an exclusive lock on the DLQ file for 4 s
    locker = sqlite3.connect(run.dlq_path, timeout=30, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        time.sleep(4)
    finally:
        locker.rollback()
        locker.close()
    # Then the dead letters that could not be written were not acked, and went in later
    run.wait_done(PATIENCE)
    failed = _failed_dlq_writes(run)
    counts = run.finish(note=f"DLQ locked 4 s at 20%; {failed} DLQ writes failed, not acked")
    assert failed, "the lock hit no write"
    assert run.dead() == failing
    assert counts.handled == run.n - len(failing)


def dlq_sessions_terminated(run: Run, url: str) -> None:
    """6b. The PostgreSQL DLQ's sessions are terminated, 3 times: dead letters still go in."""
    # Given N messages, 10% failing, and two workers sharing a PostgreSQL DLQ
    application_name = run.use_postgres_dlq(url)
    actions = _failing_actions(run.n, seed=6)
    ids = run.publish(actions)
    failing = {i for i, a in zip(ids, actions, strict=True) if a == "raise"}
    run.workers.start(FAULT_SLEEP=pace(run, 6))
    run.workers.start(FAULT_SLEEP=pace(run, 6))
    # When the server terminates their DLQ sessions at 20%, 40% and 60%
    terminated = 0
    for share in (0.2, 0.4, 0.6):
        _mid_stream(run, share)
        terminated += terminate_sessions(url, application_name)
    assert terminated >= 2, "no DLQ session was there to terminate"
    # Then every failing message is in the DLQ, and nothing is lost
    run.wait_done(PATIENCE)
    failed = _failed_dlq_writes(run)
    counts = run.finish(
        note=f"{terminated} DLQ sessions terminated at 20%, 40%, 60%; "
        f"{failed} DLQ writes failed, not acked"
    )
    assert run.dead() == failing
    assert counts.handled == run.n - len(failing)


def terminate_sessions(url: str, application_name: str) -> int:
    """``pg_terminate_backend`` every session named ``application_name``; how many."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchall()
    return sum(1 for (done,) in rows if done)


def poison(run: Run, supervisor_workers: int = 2) -> None:
    """7. Poison messages kill their worker: quarantined after max_deliveries, the rest flows."""
    # Given N messages, two of which make the handler call os._exit(1)
    actions = ["ok"] * run.n
    for position in (run.n // 3, 2 * run.n // 3):
        actions[position] = "exit"
    ids = run.publish(actions)
    poisons = {i for i, a in zip(ids, actions, strict=True) if a == "exit"}
    # When `missive run --workers 2` runs them, restarting each worker that dies
    supervisor = run.workers.start(supervise=supervisor_workers)
    # Then every poison message is dead-lettered for being delivered too many times
    run.wait_done(PATIENCE)
    assert supervisor.poll() is None, "the supervisor died"
    logs = run.workers.logs()
    counts = run.finish(note=f"{len(poisons)} poison messages calling os._exit(1)")
    assert poisons <= run.dead()
    reasons = run.reasons()
    assert all("max_deliveries" in reasons[i] for i in poisons), reasons
    assert "exited with status 1; restarting it" in logs
    # ...and the other messages kept flowing: only those that shared a batch or a
    # prefetch window (10) with a poison message may be quarantined with it (see
    # handled_before_poison), counted in the report
    collateral = len(run.dead() - poisons)
    assert collateral <= 2 * 10 * len(poisons), f"{collateral} others quarantined"
    assert counts.handled >= run.n - len(poisons) - collateral


#: Hostile bodies: each must be dead-lettered with a reason, the worker unharmed.
HOSTILE = {
    "empty": (b"", "invalid JSON"),
    "nul-bytes": (b'{"n": 1, "do": "ok"}\x00\x00', "invalid JSON"),
    "invalid-utf8": (b'{"n": 1, "do": "\xff\xfe"}', "invalid UTF-8"),
    "truncated-json": (b'{"n": 1, "do": "o', "invalid JSON"),
    "deeply-nested": (b"[" * 100_000, "nested too deeply"),
    "not-an-object": (b'["n", 1]', "TypeError"),
    "10-mib": (
        json.dumps({"n": 1, "do": "ok", "pad": "x" * (10 * 1024 * 1024)}).encode(),
        "over 1048576",
    ),
}


def hostile_input(run: Run) -> None:
    """8. Hostile bodies among good ones: each dead-lettered with a reason, the worker runs on."""
    # Given hostile bodies published between two halves of N good messages
    run.publish(["ok"] * (run.n // 2))
    names = list(HOSTILE)
    hostile = run.publish_raw([HOSTILE[k][0] for k in names], [f"hostile-{k}" for k in names])
    run.publish(["ok"] * (run.n - run.n // 2))
    # When one worker consumes them
    worker = run.workers.start()
    run.wait_done(PATIENCE)
    # Then it is still the same process, running
    assert worker.poll() is None, "the worker died on hostile input"
    counts = run.finish(note="7 hostile bodies, 1 of 10 MiB")
    # ...each hostile body is dead-lettered with a reason that says what is wrong
    reasons = run.reasons()
    assert set(reasons) == set(hostile)
    for name, message_id in zip(names, hostile, strict=True):
        assert HOSTILE[name][1] in reasons[message_id], (name, reasons[message_id][:300])
    assert counts.handled == counts.n - len(hostile)


def handled_before_poison(run: Run) -> None:
    """Messages handled before a poison message, in the same batch, are not quarantined.

    Their acks wait for the end of the batch (coalesced); the poison message kills
    the worker first, so they are delivered again with the poison message, counted
    as failed deliveries, and after ``max_deliveries`` dead-lettered as poison,
    although each was handled every time.
    """
    # Given three good messages and a poison one behind them, delivered together
    ids = run.publish(["ok", "ok", "ok", "exit"])
    # When a supervised worker (restarted when it dies) consumes them
    run.workers.start(supervise=1)
    run.wait_done(60)
    run.finish(report=False)
    # Then only the poison message is dead-lettered; the others are handled (once)
    assert run.dead() == {ids[3]}, f"{len(run.dead() - {ids[3]})} handled messages quarantined"
