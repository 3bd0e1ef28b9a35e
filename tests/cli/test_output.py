"""Terminal conventions: aligned tables and colour on a terminal, NO_COLOR, a progress bar.

These run the command with its stdout and stderr on a pseudo-terminal, as in a shell.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

import missive
from missive.dlq.sqlite import SQLiteDLQ
from tests.cli._apps import SHOP, write_app
from tests.cli.conftest import CLI, clean_env
from tests.cli.test_dlq_inspect import fill, order
from tests.conformance.dlq_suite import failure


def on_terminal(
    cwd: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    typed: bytes | None = None,
    status: int = 0,
) -> str:
    """Run the command on a terminal 80 columns wide; its output.

    With ``typed``, stdin is the terminal too, and ``typed`` is typed on it.
    """
    parent, child = pty.openpty()
    process = subprocess.Popen(
        CLI(cwd).command(*args),
        cwd=cwd, env=clean_env({"COLUMNS": "80", **(env or {})}),
        stdin=subprocess.DEVNULL if typed is None else child, stdout=child, stderr=child,
    )  # fmt: skip
    os.close(child)
    if typed is not None:
        os.write(parent, typed)
    chunks = []
    while True:
        try:
            chunk = os.read(parent, 65536)
        except OSError:  # the terminal closed: the program ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(parent)
    assert process.wait(30) == status
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_ls_on_a_terminal_is_an_aligned_table_with_a_bold_header(
    tmp_path: Path, dlq_path: Path
) -> None:
    fill(dlq_path, (order(1), failure("bad", "orders")), (order(22), "no handler matched"))

    output = on_terminal(tmp_path, "dlq", "ls", "--dlq", "dlq.db")

    assert "\x1b[1mID" in output
    assert "\t" not in output
    styled = next(line for line in output.splitlines() if "ID" in line)
    header = re.sub(r"\x1b\[[0-9;]*m", "", styled)
    first, second = (line for line in output.splitlines() if line.startswith("order-"))
    column = header.index("HANDLER")
    assert first[column:].startswith("orders ")
    assert second[column:].startswith("- ")
    assert first.index("25 B") == second.index("26 B") == header.index("SIZE")


def test_no_color_turns_colour_off_on_a_terminal(tmp_path: Path, dlq_path: Path) -> None:
    fill(dlq_path, (order(1), "no handler matched"))

    output = on_terminal(tmp_path, "dlq", "ls", "--dlq", "dlq.db", env={"NO_COLOR": "1"})

    assert "\x1b[" not in output
    assert output.startswith("ID ")


def test_a_long_reason_is_shortened_to_fit_the_terminal(tmp_path: Path, dlq_path: Path) -> None:
    fill(dlq_path, (order(1), "a very long reason " * 20))

    output = on_terminal(tmp_path, "dlq", "ls", "--dlq", "dlq.db", env={"NO_COLOR": "1"})

    row = next(line for line in output.splitlines() if line.startswith("order-1"))
    assert len(row) <= 80
    assert "…" in row


def test_a_long_replay_on_a_terminal_shows_a_progress_bar(tmp_path: Path, dlq_path: Path) -> None:
    write_app(tmp_path, "shop", SHOP)
    fill(dlq_path, *((order(n), "x") for n in range(25)))
    (tmp_path / "fixed").touch()

    output = on_terminal(tmp_path, "dlq", "replay", "--processor", "shop:processor", "--all",
                         "--dlq", "dlq.db")  # fmt: skip

    assert "replaying [" in output
    assert "25/25" in output
    assert "25 handled and removed" in output


def test_json_is_the_same_on_a_terminal(tmp_path: Path, dlq_path: Path) -> None:
    fill(dlq_path, (missive.RawMessage(b"x", b"one"), "no handler matched"))

    output = on_terminal(tmp_path, "dlq", "ls", "--json", "--dlq", "dlq.db")

    assert json.loads(output)["id"] == "one"


def test_purge_on_a_terminal_asks_first(tmp_path: Path, dlq_path: Path) -> None:
    fill(dlq_path, (order(1), "x"), (order(2), "x"))

    output = on_terminal(tmp_path, "dlq", "purge", "--dlq", "dlq.db", typed=b"y\n")

    assert "Delete 2 dead letter(s) from dlq.db? [y/N]" in output
    assert "purged 2 dead letter(s)" in output
    with SQLiteDLQ(dlq_path) as dlq:
        assert len(dlq) == 0


def test_show_raw_does_not_write_binary_to_a_terminal(tmp_path: Path, dlq_path: Path) -> None:
    fill(dlq_path, (missive.RawMessage(b"\x1b]0;pwned\x07\xff", b"bin"), "x"))

    output = on_terminal(tmp_path, "dlq", "show", "bin", "--raw", "--dlq", "dlq.db", status=1)

    assert "pwned" not in output
    assert "redirect it (> message.bin) or pipe it (| xxd)" in output
