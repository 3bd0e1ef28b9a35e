"""Where output goes: aligned tables and colour on a terminal, NO_COLOR, a progress bar;
and nowhere, quietly, when stdout is closed or its reader goes away.

The terminal tests run the command with its stdout and stderr on a pseudo-terminal,
as in a shell; those of a closed stdout run it under ``sh`` with ``>&-`` or with a
pipe its reader closes.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

import missive
from missive.cli._output import Output
from missive.dlq.sqlite import SQLiteDLQ
from missive.testing.conformance.dlq_suite import failure
from tests.cli._apps import SHOP, write_app
from tests.cli.conftest import CLI, Result, clean_env
from tests.cli.test_dlq_inspect import fill, order


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


def with_stdout_closed(cwd: Path, *args: str, input: bytes = b"") -> Result:
    """Run the command as ``missive ARGS >&-`` in a shell."""
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *CLI(cwd).command(*args)],
        cwd=cwd, env=clean_env(), input=input, stderr=subprocess.PIPE, timeout=60, check=False,
    )  # fmt: skip
    return Result(done.returncode, b"", done.stderr.decode("utf-8", "replace"))


def into_a_closed_pipe(cwd: Path, *args: str) -> Result:
    """Run the command with stdout a pipe whose reader has already gone."""
    with open(cwd / "stderr.txt", "w+b") as stderr:
        process = subprocess.Popen(
            CLI(cwd).command(*args), cwd=cwd, env=clean_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
        assert process.stdout is not None
        process.stdout.close()
        status = process.wait(60)
        stderr.seek(0)
        return Result(status, b"", stderr.read().decode("utf-8", "replace"))


class _ReaderGone(io.StringIO):
    """A stdout whose reader has gone: every write and flush raises BrokenPipeError."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_once_the_reader_has_gone_lines_are_dropped_without_an_error() -> None:
    # Given an output whose stdout's reader has gone
    out = Output(stdout=_ReaderGone(), stderr=io.StringIO())

    # When lines, a table and a flush are written, then nothing raises
    out.line("first")
    out.table(["ID"], [["one"]], wide=0)
    out.flush()


def test_ls_with_stdout_closed_succeeds_quietly(tmp_path: Path, dlq_path: Path) -> None:
    # Given a DLQ with a dead letter
    fill(dlq_path, (order(1), "x"))

    # When ls runs with stdout closed (>&-)
    result = with_stdout_closed(tmp_path, "dlq", "ls", "--dlq", "dlq.db")

    # Then it succeeds and says nothing
    assert (result.returncode, result.stderr) == (0, "")


def test_run_with_stdout_closed_handles_every_line_and_succeeds_quietly(tmp_path: Path) -> None:
    # Given the shop application, fixed
    write_app(tmp_path, "shop", SHOP)
    (tmp_path / "fixed").touch()
    lines = b"".join(b'{"kind":"order","n":%d}\n' % n for n in range(3))

    # When it runs with stdout closed
    result = with_stdout_closed(tmp_path, "run", "shop:adapter", "--log-level", "WARNING",
                                input=lines)  # fmt: skip

    # Then every line was handled, and the run ended with status 0 and no complaint
    assert (tmp_path / "handled.log").read_text().split() == ["0", "1", "2"]
    assert (result.returncode, result.stderr) == (0, "")


def test_a_replay_whose_reader_goes_away_still_replays_every_dead_letter(
    tmp_path: Path, dlq_path: Path
) -> None:
    # Given more dead letters than stdout buffers lines about them
    write_app(tmp_path, "shop", SHOP)
    fill(dlq_path, *((order(n), "x") for n in range(300)))
    (tmp_path / "fixed").touch()

    # When a verbose replay writes into a pipe whose reader has gone
    result = into_a_closed_pipe(tmp_path, "dlq", "replay", "-v", "--processor", "shop:processor",
                                "--all", "--dlq", "dlq.db")  # fmt: skip

    # Then each was replayed and removed, and the command ended quietly with status 0
    assert (result.returncode, result.stderr) == (0, "")
    with SQLiteDLQ(dlq_path) as dlq:
        assert len(dlq) == 0
    assert len((tmp_path / "handled.log").read_text().split()) == 300


def test_export_into_a_pipe_whose_reader_has_gone_succeeds_quietly(
    tmp_path: Path, dlq_path: Path
) -> None:
    fill(dlq_path, *((order(n), "x") for n in range(300)))

    result = into_a_closed_pipe(tmp_path, "dlq", "export", "--dlq", "dlq.db")

    assert (result.returncode, result.stderr) == (0, "")
