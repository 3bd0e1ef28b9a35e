"""``missive dlq history``, and the audit entry each command that changes a DLQ records.

:func:`record` appends one :class:`~missive.dlq.audit.AuditEntry` to the DLQ's
audit table: the commands here (archive, unarchive, expire, edit) call it after
they ran; ``rm``, ``purge`` and ``replay``, defined elsewhere, are wrapped by
:func:`add_parser` so that each run of them records one too, with the last line it
printed as its outcome.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

from missive.cli._common import CLIError, format_id, open_store, parse_id
from missive.cli._filters import add_dlq_option, count
from missive.cli._output import Output, safe_text
from missive.cli._show import when
from missive.dlq import DeadLetterStore
from missive.dlq.audit import AuditEntry, current_user
from missive.errors import MissiveError

__all__ = ["add_parser", "command_line", "record", "selection"]

# user:password@ in a URL anywhere in an argument (--dlq=postgresql://u:p@h/db).
_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
# The filters a command may have, as their options are spelled.
_FILTERS = ("reason", "handler", "since", "before", "group", "archived")
# Commands defined elsewhere whose runs are recorded by a wrapper.
_WRAPPED = ("rm", "purge", "replay")


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``history`` under ``missive dlq``, and record each run of rm, purge, replay."""
    history = sub.add_parser("history", help="the operations run on the DLQ, newest first")
    history.description = _history.__doc__
    add_dlq_option(history)
    history.add_argument("--limit", type=count, metavar="N", help="at most N entries")
    history.add_argument("--json", action="store_true", help="one JSON object a line")
    history.set_defaults(func=_history)
    for name in _WRAPPED:
        parser = sub.choices.get(name)
        if parser is not None:
            parser.set_defaults(func=_recorded(name, parser.get_default("func")))


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command line (``sys.argv`` by default) as a shell would read it, any URL's
    password replaced by ``***``."""
    words = ["missive", *(sys.argv[1:] if argv is None else argv)]
    return " ".join(shlex.quote(_PASSWORD.sub(r"\1***@", word)) for word in words)


def selection(args: argparse.Namespace) -> str | None:
    """The filters given in ``args``, as options (``--reason 'timeout' --group ...``)."""
    parts = []
    for name in _FILTERS:
        value = getattr(args, name, None)
        if value is True:
            parts.append(f"--{name}")
        elif value not in (None, False):
            text = value.isoformat() if hasattr(value, "isoformat") else str(value)
            parts.append(f"--{name} {shlex.quote(text)}")
    return " ".join(parts) or None


def record(
    store: DeadLetterStore,
    args: argparse.Namespace,
    operation: str,
    ids: Sequence[bytes],
    outcome: str,
    *,
    total: int | None = None,
    original: bytes | None = None,
) -> None:
    """Append one audit entry for ``operation`` on ``ids`` (``total`` of them, if more)."""
    store.audit(
        AuditEntry(
            operation=operation,
            ids=tuple(format_id(key) for key in ids[:100]),
            count=len(ids) if total is None else total,
            selection=selection(args),
            user=current_user(),
            command=command_line(),
            outcome=outcome,
            original=original,
        )
    )


def _recorded(
    operation: str, func: Callable[[argparse.Namespace, Output], int]
) -> Callable[[argparse.Namespace, Output], int]:
    def run(args: argparse.Namespace, out: Output) -> int:
        printed: list[str] = []
        line, note = out.line, out.note

        def keep_line(text: str = "") -> None:
            printed.append(text)
            line(text)

        def keep_note(text: str) -> None:
            printed.append(text)
            note(text)

        out.line, out.note = keep_line, keep_note  # type: ignore[method-assign]
        try:
            status = func(args, out)
        except (CLIError, MissiveError) as exc:
            _record_run(args, operation, f"failed: {str(exc).splitlines()[0]}")
            raise
        finally:
            out.line, out.note = line, note  # type: ignore[method-assign]
        _record_run(args, operation, printed[-1] if printed else f"exit status {status}")
        return status

    return run


def _record_run(args: argparse.Namespace, operation: str, outcome: str) -> None:
    texts = getattr(args, "ids", None) or []
    try:
        with open_store(args.dlq, args.dlq_table) as store:
            ids = [key for key in (_parsed(text) for text in texts) if key is not None]
            record(store, args, operation, ids, outcome[:500])
    except (CLIError, MissiveError):
        pass  # the DLQ could not be opened: the command's own error says so


def _parsed(text: str) -> bytes | None:
    try:
        return parse_id(text)
    except CLIError:
        return None


def _history(args: argparse.Namespace, out: Output) -> int:
    """List the operations run on the DLQ by missive dlq commands, newest first: when
    (UTC), the operation, how many dead letters, the OS user, the outcome and the
    command line (passwords redacted). With --json, one object a line, with the ids."""
    with open_store(args.dlq, args.dlq_table, read_only=True) as store:
        entries = store.history(args.limit)
    if args.json:
        for entry in entries:
            data = {
                "at": entry.at.isoformat(),
                "operation": entry.operation,
                "ids": list(entry.ids),
                "count": entry.count,
                "selection": entry.selection,
                "user": entry.user,
                "command": entry.command,
                "outcome": entry.outcome,
                "edited": entry.original is not None,
            }
            out.line(json.dumps(data))
        return 0
    rows = [
        [
            when(entry.at),
            entry.operation,
            str(entry.count),
            safe_text(entry.user),
            safe_text(entry.outcome),
            safe_text(entry.command),
        ]
        for entry in entries
    ]
    out.table(["WHEN", "OPERATION", "COUNT", "USER", "OUTCOME", "COMMAND"], rows, wide=5)
    if out.tty and not rows:
        out.note("no operations recorded")
    return 0
