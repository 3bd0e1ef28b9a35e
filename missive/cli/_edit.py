"""``missive dlq edit``: change a dead letter's payload and replay it, in this process.

The payload is written to a temporary file and opened in ``$EDITOR`` (or read from
``--from-file``), checked to decode as the message's class, and replayed through the
processor as ``missive dlq replay`` does (:class:`~missive.cli._replay_loop.InProcess`).
Handled, the dead letter is deleted; failing again, it is stored again with the
edited payload and the new reason. Either way the original bytes are kept in the
audit entry of the edit (``missive dlq history``): the dead letter itself may be gone.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from missive.cli._audit import record
from missive.cli._common import CLIError, format_id, load_processor, open_store, parse_id
from missive.cli._filters import add_dlq_option
from missive.cli._output import Output, safe_text
from missive.cli._replay_loop import InProcess
from missive.dlq import DeadLetter
from missive.message import Message

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``edit`` under ``missive dlq``."""
    edit = sub.add_parser("edit", help="edit a dead letter's payload, then replay it")
    edit.description = _edit.__doc__
    add_dlq_option(edit)
    edit.add_argument("id", metavar="ID")
    edit.add_argument(
        "--processor", required=True, metavar="MODULE:PROCESSOR", help="the processor to use"
    )
    edit.add_argument(
        "--from-file", metavar="PATH", type=Path, help="the new payload (instead of $EDITOR)"
    )
    edit.set_defaults(func=_edit)


def _edit(args: argparse.Namespace, out: Output) -> int:
    """Open a dead letter's payload in $EDITOR (or take it from --from-file), check that
    it decodes as the message's class, and replay it through --processor in this
    process. Handled: the dead letter is deleted. Failing again: it is stored again
    with the edited payload and the new reason (exit status 1). An unchanged payload
    replays nothing. The original bytes are kept in the audit table."""
    processor, _ = load_processor(args.processor)
    with open_store(args.dlq, args.dlq_table) as store:
        message_id = parse_id(args.id)
        try:
            letter = store.record(message_id)
        except KeyError:
            raise CLIError(f"no dead letter with id {args.id!r}") from None
        original = letter.message.raw_data
        data = _read(args.from_file) if args.from_file else _edited(original)
        if data == original:
            raise CLIError("the payload is unchanged; nothing replayed")
        message = _rebuilt(letter, data)
        outcome, value = _replay(processor, letter, message)
        if outcome == "acked":
            store.delete_many([message_id])
            text = "handled; dead letter removed"
        elif value is not None:
            store.replace(message_id, value)
            summary = getattr(value[1], "summary", "dead-lettered")
            text = f"failed again ({summary}); stored again with the edited payload"
        else:
            text = "nacked by the processor; dead letter kept unchanged"
        record(store, args, "edit", [message_id], text, original=original)
    out.line(f"{safe_text(format_id(message_id))}: {safe_text(text)}")
    return 0 if outcome == "acked" else 1


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CLIError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None


def _edited(original: bytes) -> bytes:
    editor = os.environ.get("EDITOR", "").strip()
    if not editor:
        raise CLIError("no editor: set $EDITOR, or pass --from-file PATH")
    handle, name = tempfile.mkstemp(prefix="missive-edit-", suffix=".payload")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(original)
        try:
            done = subprocess.run([*shlex.split(editor), name], check=False)
        except (OSError, ValueError) as exc:
            detail = getattr(exc, "strerror", None) or exc
            raise CLIError(f"cannot run $EDITOR {editor!r}: {detail}") from None
        if done.returncode != 0:
            raise CLIError(f"$EDITOR exited with status {done.returncode}; nothing replayed")
        return Path(name).read_bytes()
    finally:
        os.unlink(name)


def _rebuilt(letter: DeadLetter, data: bytes) -> Message:
    cls = type(letter.message)
    message = cls(data, letter.message_id, letter.attributes)
    decode = getattr(message, "get_json", None)
    if decode is not None:
        try:
            decode()
        except ValueError as exc:
            problem = getattr(exc, "problem", "") or type(exc).__name__
            raise CLIError(
                f"the edited payload does not decode as {cls.__name__} ({problem}); "
                "nothing replayed"
            ) from None
    return message


def _replay(
    processor: Any, letter: DeadLetter, message: Message
) -> tuple[str, tuple[Message, Any] | None]:
    """Replay ``message``; what became of it, and what the processor dead-lettered."""
    caught: dict[bytes, tuple[Message, Any]] = {}
    previous = processor.dlq
    processor.set_dlq(caught)
    try:
        with processor.context() as context:
            outcome = InProcess(context).send(letter, message)
    finally:
        processor.set_dlq(previous)
    return outcome, caught.get(letter.message_id)
