"""``missive dlq ls|show|rm|purge|export|stats``: look at and tidy up a DLQ."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from missive.attempts import describe_history, read_history
from missive.cli._common import (
    DLQ_VARIABLE,
    CLIError,
    format_id,
    open_store,
    parse_id,
    parse_time,
    redact,
    safe_repr,
)
from missive.cli._output import Output, hex_preview, safe_text, size_text
from missive.dlq import DeadLetter, DeadLetterStore
from missive.dlq._codec import encode_attributes, other_payload_prefix

__all__ = [
    "add_dlq_option",
    "add_filters",
    "add_parsers",
    "add_table_option",
    "record_json",
    "selected",
]


def add_dlq_option(parser: argparse.ArgumentParser, *, default: Any = argparse.SUPPRESS) -> None:
    """Add ``--dlq PATH_OR_URL`` and ``--dlq-table NAME`` to ``parser``."""
    parser.add_argument(
        "--dlq",
        metavar="PATH_OR_URL",
        default=default,
        help="the DLQ: dlq.db, sqlite:///dlq.db or postgresql://... (default: $MISSIVE_DLQ)",
    )
    add_table_option(parser, default=default)


def add_table_option(parser: argparse.ArgumentParser, *, default: Any = argparse.SUPPRESS) -> None:
    """Add ``--dlq-table NAME`` to ``parser``."""
    parser.add_argument(
        "--dlq-table",
        metavar="NAME",
        default=default,
        help="a PostgreSQL DLQ's table (default: $MISSIVE_DLQ_TABLE, else missive_dead_letters)",
    )


def add_filters(parser: argparse.ArgumentParser) -> None:
    """Add the filters of :meth:`DeadLetterStore.records` to ``parser``."""
    parser.add_argument("--reason", metavar="TEXT", help="only reasons containing TEXT")
    parser.add_argument("--handler", metavar="NAME", help="only those from handler NAME")
    parser.add_argument(
        "--since", metavar="TIME", type=_time, help="only those dead-lettered at or after TIME"
    )
    parser.add_argument(
        "--before", metavar="TIME", type=_time, help="only those dead-lettered before TIME"
    )


def _time(text: str) -> datetime:
    try:
        return parse_time(text)
    except CLIError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    # int() would also take "٣", " 3", "1_0" and "-1".
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(
            f"must be a whole number of 0 or more, not {safe_repr(text)}"
        )
    digits = digits.lstrip("0") or "0"
    # Beyond int()'s 4300 digits, but no store holds that many anyway.
    return int(digits) if len(digits) < 4000 else sys.maxsize


def selected(
    store: DeadLetterStore, args: argparse.Namespace, limit: int | None = None
) -> Iterator[DeadLetter]:
    """The records that the filters in ``args`` select, oldest first."""
    return store.records(
        reason=args.reason, handler=args.handler, since=args.since, before=args.before, limit=limit
    )


def add_parsers(dlq: argparse.ArgumentParser) -> argparse._SubParsersAction[Any]:
    """Add ``ls``, ``show``, ``rm``, ``purge``, ``export`` and ``stats`` under ``dlq``."""
    sub = dlq.add_subparsers(dest="dlq_command", metavar="COMMAND", required=True)

    ls = sub.add_parser("ls", help="list dead letters, one a row", description=_ls.__doc__)
    add_dlq_option(ls)
    add_filters(ls)
    ls.add_argument("--limit", type=_count, metavar="N", help="at most N rows")
    ls.add_argument("--json", action="store_true", help="one JSON object a line, for scripts")
    ls.set_defaults(func=_ls)

    show = sub.add_parser("show", help="everything stored about one dead letter")
    show.description = _show.__doc__
    add_dlq_option(show)
    show.add_argument("id", metavar="ID", help="the id, as ls shows it")
    mode = show.add_mutually_exclusive_group()
    mode.add_argument("--raw", action="store_true", help="write the payload's exact bytes")
    mode.add_argument("--json", action="store_true", help="as one JSON object, as export")
    show.set_defaults(func=_show)

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


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def record_json(record: DeadLetter, *, full: bool = False) -> dict[str, Any]:
    """A record as JSON-ready values; ``full`` adds the payload (base64) and traceback."""
    data: dict[str, Any] = {
        "id": format_id(record.message_id),
        "id_b64": base64.b64encode(record.message_id).decode("ascii"),
        "dead_lettered_at": record.dead_lettered_at.isoformat(),
        "first_dead_lettered_at": record.first_dead_lettered_at.isoformat(),
        "times": record.times,
        "size": record.size,
        "handler": record.handler,
        "exc_type": record.exc_type,
        "summary": record.summary,
        "reason": str(record.reason),
        "message_class": record.message_class,
        "attributes": json.loads(encode_attributes(record.attributes)),
    }
    if full:
        data["traceback"] = record.traceback
        data["payload_b64"] = base64.b64encode(record.message.raw_data).decode("ascii")
    return data


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
                _when(r.dead_lettered_at),
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


def _record(store: DeadLetterStore, text: str) -> DeadLetter:
    try:
        return store.record(parse_id(text))
    except KeyError:
        raise CLIError(f"no dead letter with id {text!r} (ls lists the ids)") from None


def _other_payloads(store: DeadLetterStore, message_id: bytes) -> list[str]:
    """The ids under which the store kept other payloads that came with ``message_id``."""
    prefix = other_payload_prefix(message_id)
    return [format_id(key) for key in store if key.startswith(prefix)]


def _show(args: argparse.Namespace, out: Output) -> int:
    """Show everything stored about one dead letter. The payload is shown as text when
    it is UTF-8 without control characters, else as a hex preview; --raw writes its
    exact bytes to stdout instead (not to a terminal if they are not text). Other
    payloads that came with the same id, which the DLQ keeps under ids of their own
    (ID~other-payload-...), are listed after it."""
    with open_store(args.dlq, args.dlq_table, read_only=True) as store:
        record = _record(store, args.id)
        others = _other_payloads(store, record.message_id)
    payload = record.message.raw_data
    if args.raw:
        if out.tty and _as_text(payload) is None:
            raise CLIError(
                "the payload is not text and stdout is a terminal, which it could disturb: "
                "redirect it (> message.bin) or pipe it (| xxd)"
            )
        stream = getattr(out.stdout, "buffer", None)
        if stream is None:
            raise CLIError("--raw needs a binary stdout")
        out.stdout.flush()
        stream.write(payload)
        stream.flush()
        return 0
    if args.json:
        out.line(json.dumps({**record_json(record, full=True), "other_payloads": others}))
        return 0

    def label(name: str) -> str:
        return out.style(f"{name}:", "bold")

    fields = [
        ("id", format_id(record.message_id)),
        ("message class", record.message_class),
        ("handler", record.handler or "-"),
        ("exception", record.exc_type or "-"),
        ("size", f"{record.size} bytes"),
        ("times", str(record.times)),
        ("first dead-lettered", record.first_dead_lettered_at.isoformat()),
        ("last dead-lettered", record.dead_lettered_at.isoformat()),
        ("attributes", encode_attributes(record.attributes)),
        ("summary", record.summary),
        ("reason", str(record.reason)),
    ]
    for name, value in fields:
        out.line(f"{label(name)} {safe_text(value)}")
    history = read_history(record.attributes)
    if history:  # retried before it was dead-lettered: one attempt a line
        out.line(label("history"))
        out.line(safe_text(describe_history(history), keep_newlines=True))
    if record.traceback:
        out.line(label("traceback"))
        out.line(safe_text(record.traceback.rstrip("\n"), keep_newlines=True))
    text = _as_text(payload)
    if text is None:
        out.line(f"{label('payload')} {len(payload)} bytes, not text; hex preview:")
        out.line(hex_preview(payload))
    else:
        out.line(f"{label('payload')} {len(payload)} bytes of UTF-8 text:")
        out.line(text)
    if others:
        out.line(
            f"{label('other payloads')} {len(others)} more came with this id, kept as: "
            f"{safe_text(' '.join(others))} (show each with: missive dlq show ID)"
        )
    return 0


def _as_text(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if safe_text(text, keep_newlines=True) == text else None


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
            "at": _when(oldest.first_dead_lettered_at),
        }
        ends["newest"] = {"id": format_id(newest.message_id), "at": _when(newest.dead_lettered_at)}
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
