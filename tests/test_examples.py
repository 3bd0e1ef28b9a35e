"""The shipped examples, run as a user runs them."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_handles_the_good_messages_and_dead_letters_the_bad(tmp_path: Path) -> None:
    dlq_path = tmp_path / "demo" / "dlq.db"
    with (ROOT / "examples" / "sample_messages.jsonl").open("rb") as sample:
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "json_processor.py"), str(dlq_path)],
            stdin=sample,
            capture_output=True,
            timeout=60,
            check=False,
        )
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "Handled 6 messages" in out
    assert "4 messages in the dead-letter queue" in out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("  line")}
    assert set(lines) == {"4", "6", "7", "9"}
    assert "no handler matched" in lines["4"]
    assert "invalid JSON" in lines["6"]
    assert "handler 'record_purchase' raised ValueError" in lines["7"]
    assert "invalid JSON" in lines["9"]


def test_the_demo_logs_ids_and_sizes_but_never_payloads(tmp_path: Path) -> None:
    with (ROOT / "examples" / "sample_messages.jsonl").open("rb") as sample:
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "json_processor.py"), str(tmp_path / "d.db")],
            stdin=sample,
            capture_output=True,
            timeout=60,
            check=False,
        )
    log = result.stderr.decode()
    assert "dead-lettered" in log
    for secret in ("linus", "edsger", "not json at all", "negative"):
        assert secret not in log
