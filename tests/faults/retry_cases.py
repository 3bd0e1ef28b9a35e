"""The delayed-retry scenarios (issue 13), written once against a Run, on brokers whose
transport keeps delayed retries (RabbitMQ's delay queues, Redis Streams' sorted set).

The workers' processor gets a :class:`missive.Retry` through ``FAULT_RETRY``; the
messages' ``do`` says how they fail (see ``apps.py``). A broker here also answers
``waiting()``: how many messages wait for their delayed retry on it.
"""

from __future__ import annotations

import json
import os
import signal
import time

from tests.faults.cases import FAILING, PATIENCE, STREAM_SECONDS, _failing_actions, pace
from tests.faults.scenario import Run

#: How long the dependency of scenario 9 is down, from the workers' start.
DOWN_SECONDS = 10.0
#: Scenario 9's policy: retries spread over well past the outage (full jitter).
OUTLAST = {"delayed": 30, "initial_delay": 1.0, "multiplier": 2.0, "max_delay": 4.0}
#: Scenario 10's policy: each message waits up to 8 s for its one delayed retry.
ONE_LATER = {"delayed": 1, "initial_delay": 8.0, "max_delay": 8.0}
#: Scenario 11's policy: 2 attempts a delivery, 3 deliveries: 6 attempts, then the DLQ.
SIX_ATTEMPTS = {"immediate": 1, "delayed": 2, "initial_delay": 0.2, "max_delay": 0.5}
#: How many messages scenario 10 wants waiting when it kills the worker.
WAITING = 1000


def _waiting(run: Run) -> int:
    broker = run.broker
    assert hasattr(broker, "waiting"), f"{broker.name} cannot say what waits for a retry"
    return int(broker.waiting())  # type: ignore[attr-defined]


def dependency_down(run: Run) -> None:
    """9. The handlers' dependency is down for the first 10 s: every message is retried
    later until it is back, none is dead-lettered, none lost."""
    # Given N messages whose handler needs a dependency that is down for 10 s
    run.publish(["dependency"] * run.n)
    down_until = time.time() + DOWN_SECONDS
    env = {
        "FAULT_RETRY": json.dumps(OUTLAST),
        "FAULT_DOWN_UNTIL": repr(down_until),
        "FAULT_SLEEP": pace(run, STREAM_SECONDS),
        # The poison limit counts the retries: above the policy's, as it should be.
        "FAULT_MAX_DELIVERIES": str(OUTLAST["delayed"] + 10),
    }
    # When two workers consume them through the outage
    run.workers.start(**env)
    run.workers.start(**env)
    run.wait(lambda: _waiting(run) > 0, "messages wait for a delayed retry", PATIENCE)
    # Then once it is back every message is handled, none dead-lettered
    run.wait_done(PATIENCE + DOWN_SECONDS)
    counts = run.finish(note=f"dependency down {DOWN_SECONDS:.0f} s from the start")
    assert time.time() > down_until
    assert counts.dead_lettered == 0
    assert counts.handled == run.n


def killed_while_waiting(run: Run) -> None:
    """10. SIGKILL the worker while many messages wait for their delayed retry: a new
    worker handles every one of them; the waits were never in the worker's memory."""
    # Given one worker failing each message's first delivery, each retried up to 8 s later
    want = min(WAITING, run.n // 2)
    run.publish(["once"] * run.n)
    env = {"FAULT_RETRY": json.dumps(ONE_LATER)}
    victim = run.workers.start(**env)
    run.wait(lambda: _waiting(run) >= want, f"{want} messages wait for a retry", PATIENCE)
    # When it is killed with SIGKILL, then a new worker started
    at_kill = _waiting(run)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    run.workers.start(**env)
    # Then every message is handled after its retry: none lost, none dead-lettered
    run.wait_done(PATIENCE)
    counts = run.finish(note=f"1 worker SIGKILLed with {at_kill:,} waiting for a retry")
    assert counts.dead_lettered == 0
    assert counts.handled == run.n


def always_failing(run: Run) -> None:
    """11. 10% of the messages always fail: exactly those are dead-lettered, after six
    attempts (two a delivery, three deliveries), each with the history of all six."""
    # Given N messages, a random 10% of which always make their handler raise
    actions = _failing_actions(run.n, seed=11)
    ids = run.publish(actions)
    failing = {i for i, a in zip(ids, actions, strict=True) if a == "raise"}
    # When two workers consume them, retrying at once and later
    env = {"FAULT_RETRY": json.dumps(SIX_ATTEMPTS), "FAULT_SLEEP": pace(run, STREAM_SECONDS)}
    run.workers.start(**env)
    run.workers.start(**env)
    run.wait_done(PATIENCE)
    # Then the failing ones, and only those, are in the DLQ, each with its six attempts
    counts = run.finish(note=f"{FAILING:.0%} always fail; 1 immediate and 2 delayed retries")
    assert run.dead() == failing
    assert counts.handled == run.n - len(failing)
    reasons = run.reasons()
    for message_id in failing:
        reason = reasons[message_id]
        assert "RuntimeError: injected failure" in reason
        assert "attempts (6):" in reason, reason
        assert reason.count("retried at once") == 3, reason
        assert reason.count("retried in") == 2, reason
        assert "given up" in reason, reason
