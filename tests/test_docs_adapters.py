"""The code in docs/adapters.md: every block runs, and the custom adapter is the shipped one."""

from __future__ import annotations

import queue
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import missive

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from queue_adapter import QueueAdapter

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "adapters.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", DOC, flags=re.DOTALL)


def test_the_custom_adapter_shown_is_examples_queue_adapter() -> None:
    example = (ROOT / "examples" / "queue_adapter.py").read_text(encoding="utf-8")
    shown = [block for block in BLOCKS if "class QueueTransport" in block]
    assert len(shown) == 1
    assert shown[0] in example


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block {i}" for i in range(len(BLOCKS))])
def test_every_python_block_runs(block: str) -> None:
    namespace: dict[str, object] = {"__name__": "docs_adapters"}
    exec(compile(block, "docs/adapters.md", "exec"), namespace)  # our own docs


def test_the_observer_example_counts_what_an_adapter_settles() -> None:
    [block] = [block for block in BLOCKS if "class CountAcks" in block]
    namespace: dict[str, Any] = {"__name__": "docs_adapters"}
    exec(compile(block, "docs/adapters.md", "exec"), namespace)  # our own docs
    processor, counter = namespace["processor"], namespace["counter"]
    processor.set_dlq({})
    processor.handle_for(lambda m: m.raw_data == b"ok")(lambda message, ctx: ctx.ack())
    source: queue.Queue[tuple[bytes, bytes]] = queue.Queue()
    for pair in [(b"1", b"ok"), (b"2", b"no handler: dead-lettered, and acked")]:
        source.put(pair)
    adapter = QueueAdapter(missive.RawMessage, processor, source)
    processor.after_handling(lambda p, h: source.empty() and adapter.stop())
    adapter.run()
    assert counter.count == 2
