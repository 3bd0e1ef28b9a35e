"""What the broker benchmarks share: the payloads, the clock, interleaved runs, the table.

Each benchmark times its contenders (Missive, the raw client, a peer) on the same
work, one after the other in each repetition, and prints the medians side by side.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable

Result = tuple[float, int, float]  # (seconds, messages handled, CPU seconds of this process)
Runs = dict[str, list[tuple[float, float]]]  # contender -> (seconds, CPU seconds) per run


def payloads(count: int) -> list[bytes]:
    """``count`` JSON documents of about 100 bytes."""
    return [
        json.dumps(
            {
                "label": "sign-in",
                "user": f"user-{i:08d}",
                "amount": i % 97,
                "ok": True,
                "note": "x" * 24,
            }
        ).encode()
        for i in range(count)
    ]


class Clock:
    """Wall and CPU time from the first message handled to the last."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.handled = 0
        self.start = self.cpu = self.elapsed = self.cpu_elapsed = 0.0

    def tick(self) -> bool:
        """Count one message handled; true for the last one."""
        self.handled += 1
        if self.handled == 1:
            self.start, self.cpu = time.perf_counter(), time.process_time()
        elif self.handled == self.count:
            self.elapsed = time.perf_counter() - self.start
            self.cpu_elapsed = time.process_time() - self.cpu
            return True
        return False

    def result(self) -> Result:
        return self.elapsed, self.handled, self.cpu_elapsed


def interleave(contenders: dict[str, Callable[[], Result]], count: int, repeat: int) -> Runs:
    """Run each contender ``repeat`` times, interleaved: (seconds, CPU seconds) per run."""
    runs: Runs = {name: [] for name in contenders}
    names = list(contenders)
    for repetition in range(repeat):
        # Each repetition starts with the next contender, so that none always runs
        # right after the same one (a heavy run disturbs the next on a shared VM).
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, handled, cpu = contenders[name]()
            if handled != count:
                print(f"  {name}: handled {handled} of {count}", file=sys.stderr)
            runs[name].append((seconds, cpu))
    return runs


def table(title: str, count: int, runs: Runs) -> str:
    """A Markdown table of medians: wall time, msg/s, CPU time, and their ratios to the
    first contender, the raw client (its median / the contender's: 1.0 is as fast).

    CPU time is this process's, the consumer's (all its threads): less disturbed than
    wall time by other work on the machine.
    """

    def median(name: str, index: int) -> float:
        return statistics.median(run[index] for run in runs[name])

    baseline = next(iter(runs))
    raw, raw_cpu = median(baseline, 0), median(baseline, 1)
    lines = [
        f"{title} ({count:,} messages, median of {len(runs[baseline])})",
        "",
        "| contender | wall s | msg/s | ratio to raw | CPU s | CPU ratio to raw |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in runs:
        wall, cpu = median(name, 0), median(name, 1)
        lines.append(
            f"| {name} | {wall:.3f} | {count / wall:,.0f} | {raw / wall:.2f} "
            f"| {cpu:.3f} | {raw_cpu / cpu:.2f} |"
        )
    return "\n".join(lines)
