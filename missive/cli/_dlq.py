"""``missive dlq ls|show|rm|purge|export|stats``: look at and tidy up a DLQ.

``show`` is in :mod:`missive.cli._show`, the options the commands share in
:mod:`missive.cli._filters`, ``groups`` in :mod:`missive.cli._groups`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import Any

from missive.cli import _show
from missive.cli._common import DLQ_VARIABLE, CLIError, format_id, open_store, parse_id, redact
from missive.cli._filters import (
    add_dlq_option,
    add_filters,
    add_table_option,
    count,
    selected,
)
from missive.cli._output import Output, safe_text, size_text
from missive.cli._show import record_json, when
from missive.dlq import DeadLetter

__all__ = [
    "add_dlq_option",
    "add_filters",
    "add_parsers",
    "add_table_option",
    "record_json",
    "selected",
]


def add_parsers(dlq: argparse.ArgumentParser) -> argparse._SubParsersAction[Any]:
    """Add ``ls``, ``show``, ``rm``, ``purge``, ``export`` and ``stats`` under ``dlq``."""
    sub = dlq.add_subparsers(dest="dlq_command", metavar="COMMAND", required=True)

    ls = sub.add_parser("ls", help="list dead letters, one a row", description=_ls.__doc__)
    add_dlq_option(ls)
    add_filters(ls)
    ls.add_argument("--limit", type=count, metavar="N", help="at most N rows")
    ls.add_argument("--json", action="store_true", help="one JSON object a line, for scripts")
    ls.set_defaults(func=_ls)

    _show.add_parser(sub)

    rm = sub.add_parser("rm", help="delete dead letters by id", description=_rm.__doc__)
    add_dlq_option(rm)
    rm.add_argument("ids", nargs="+", metavar="ID")
    rm.set_defaults(func=_rm)

    purge = sub.add_parser("purge", help="delete every dead letter the filters select")
    purge.description = _purge.__doc__
    add_dlq_option(purge)
    add_filters(purge)
    purge.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    purge.set_defaults(func=_purge)

    export = sub.add_parser("export", help="dead letters as JSON lines, payloads in base64")
    export.description = _export.__doc__
    add_dlq_option(export)
    add_filters(export)
    export.set_defaults(func=_export)

    stats = sub.add_parser("stats", help="counts by reason and handler, oldest and newest")
    stats.description = _stats.__doc__
    add_dlq_option(stats)
    stats.add_argument("--json", action="store_true", help="as one JSON object")
    stats.set_defaults(func=_stats)
    return sub


def _ls(args: argparse.Namespace, out: Output) -> int:
    """List dead letters, oldest first: id, when last dead-lettered, reason, handler,
    size and times dead-lettered. On a terminal, an aligned table; piped, tab-separated
    text; with --json, one JSON object a line."""
    with open_store(args.dlq, args.dlq_table, read_only=True) as store:
        records = selected(store, args, args.limit)
        if args.json:
            for record in records:
                out.line(json.dumps(record_json(record)))
            return 0
        rows = [
            [
                safe_text(format_id(r.message_id)),
                when(r.dead_lettered_at),
                safe_text(r.summary),
                safe_text(r.handler or "-"),
                size_text(r.size) if out.tty else str(r.size),
                str(r.times),
            ]
            for r in records
        ]
    out.table(["ID", "WHEN", "REASON", "HANDLER", "SIZE", "TIMES"], rows, wide=2)
    if out.tty and not rows:
        out.note("no dead letters")
    return 0


def _rm(args: argparse.Namespace, out: Output) -> int:
    """Delete the dead letters with these ids. Unknown ids are reported and the
    others deleted; the exit status is then 1."""
    missing = 0
    with open_store(args.dlq, args.dlq_table) as store:
        ids = [parse_id(text) for text in args.ids]
        for text, message_id in zip(args.ids, ids, strict=True):
            try:
                del store[message_id]
            except KeyError:
                out.error(f"no dead letter with id {text!r}")
                missing += 1
    out.note(f"removed {len(ids) - missing} dead letter(s)")
    return 1 if missing else 0


def _purge(args: argparse.Namespace, out: Output) -> int:
    """Delete every dead letter the filters select (all of them with no filter),
    after asking for confirmation unless --yes."""
    with open_store(args.dlq, args.dlq_table) as store:
        ids = [record.message_id for record in selected(store, args)]
        if not ids:
            out.note("no dead letters to purge")
            return 0
        if not args.yes:
            where = redact(args.dlq or os.environ.get(DLQ_VARIABLE, ""))
            _confirm(out, f"Delete {len(ids)} dead letter(s) from {where}?")
        deleted = 0
        for message_id in ids:
            try:
                del store[message_id]
                deleted += 1
            except KeyError:  # deleted by someone else meanwhile
                pass
    out.line(f"purged {deleted} dead letter(s)")
    return 0


def _confirm(out: Output, question: str) -> None:
    if not sys.stdin.isatty():
        raise CLIError("purge asks for confirmation on a terminal; pass --yes to purge anyway")
    out.stderr.write(f"{question} [y/N] ")
    out.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise CLIError("nothing purged")


def _export(args: argparse.Namespace, out: Output) -> int:
    """Write the dead letters the filters select as JSON lines, one object each, with
    the payload in base64 (payload_b64) and the exact id (id_b64)."""
    with open_store(args.dlq, args.dlq_table, read_only=True) as store:
        for record in selected(store, args):
            out.line(json.dumps(record_json(record, full=True)))
    return 0


def _stats(args: argparse.Namespace, out: Output) -> int:
    """Count dead letters by reason (its summary) and by handler, and show the oldest
    and the newest."""
    reasons: Counter[str] = Counter()
    handlers: Counter[str] = Counter()
    total = 0
    oldest: DeadLetter | None = None
    newest: DeadLetter | None = None
    with open_store(args.dlq, args.dlq_table, read_only=True) as store:
        for record in store.records():
            total += 1
            reasons[record.summary] += 1
            handlers[record.handler or "-"] += 1
            oldest = oldest or record
            if newest is None or record.dead_lettered_at >= newest.dead_lettered_at:
                newest = record
    ends: dict[str, dict[str, str] | None] = {"oldest": None, "newest": None}
    if oldest is not None and newest is not None:
        ends["oldest"] = {
            "id": format_id(oldest.message_id),
            "at": when(oldest.first_dead_lettered_at),
        }
        ends["newest"] = {"id": format_id(newest.message_id), "at": when(newest.dead_lettered_at)}
    if args.json:
        data = {"total": total, "by_reason": dict(reasons), "by_handler": dict(handlers), **ends}
        out.line(json.dumps(data))
        return 0
    out.line(f"{out.style('dead letters:', 'bold')} {total}")
    for name, end in ends.items():
        if end is not None:
            out.line(f"{out.style(name + ':', 'bold')} {end['at']} ({safe_text(end['id'])})")
    for title, counts in (("REASON", reasons), ("HANDLER", handlers)):
        if counts:
            out.line()
            rows = [[str(n), safe_text(key)] for key, n in counts.most_common()]
            out.table(["COUNT", title], rows, wide=1)
    return 0
