"""``missive dlq archive|unarchive|expire``: keep dead letters out of sight, for a while.

An archived dead letter is kept, with an expiry time, but left out of ``ls``,
``groups``, ``purge``, ``export`` and ``replay`` unless ``--archived`` is given;
``expire`` deletes those past their expiry. Each run is recorded in the audit table.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from missive.cli._audit import record, selection
from missive.cli._common import CLIError, open_store, parse_id, safe_repr
from missive.cli._filters import add_dlq_option, add_filters, selected
from missive.cli._output import Output

__all__ = ["DEFAULT_RETENTION", "add_parser", "retention"]

#: How long an archived dead letter is kept when ``--retention`` is not given.
DEFAULT_RETENTION = "30d"
_DURATION = re.compile(r"([0-9]{1,6})([smhdw])", re.ASCII)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``archive``, ``unarchive`` and ``expire`` under ``missive dlq``."""
    archive = sub.add_parser("archive", help="keep dead letters, hidden, for a retention period")
    archive.description = _archive.__doc__
    add_dlq_option(archive)
    archive.add_argument("ids", nargs="*", metavar="ID", help="the dead letters to archive")
    add_filters(archive)
    archive.add_argument(
        "--retention",
        type=retention,
        default=retention(DEFAULT_RETENTION),
        metavar="DURATION",
        help=f"how long to keep them: 90m, 12h, 30d, 2w (default: {DEFAULT_RETENTION})",
    )
    archive.set_defaults(func=_archive)

    unarchive = sub.add_parser("unarchive", help="show archived dead letters again")
    unarchive.description = _unarchive.__doc__
    add_dlq_option(unarchive)
    unarchive.add_argument("ids", nargs="+", metavar="ID")
    unarchive.set_defaults(func=_unarchive)

    expire = sub.add_parser("expire", help="delete archived dead letters past their retention")
    expire.description = _expire.__doc__
    add_dlq_option(expire)
    expire.set_defaults(func=_expire)


def retention(text: str) -> timedelta:
    """A duration such as ``30d``, for ``--retention``'s ``type``."""
    found = _DURATION.fullmatch(text.strip())
    if not found:
        raise argparse.ArgumentTypeError(
            f"must be a duration such as 90m, 12h, 30d or 2w, not {safe_repr(text)}"
        )
    return timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})


def _archive(args: argparse.Namespace, out: Output) -> int:
    """Archive dead letters: by id, or all those the filters select (--group, --reason,
    --handler, --since, --before). They are kept, hidden from ls, groups, purge, export
    and replay unless --archived, until their retention ends; missive dlq expire then
    deletes them. Archiving an archived one again sets its new expiry."""
    filtered = selection(args)
    if args.ids and filtered:
        raise CLIError("give ids or filters, not both")
    if not args.ids and not filtered:
        raise CLIError("give the ids to archive, or --group ID or another filter")
    expires_at = datetime.now(UTC) + args.retention
    with open_store(args.dlq, args.dlq_table) as store:
        if args.ids:
            ids = [parse_id(text) for text in args.ids]
        else:
            ids = [letter.message_id for letter in selected(store, args)]
        archived = store.archive(ids, expires_at) if ids else 0
        outcome = f"archived {archived} dead letter(s) until {expires_at:%Y-%m-%d %H:%M} UTC"
        record(store, args, "archive", ids, outcome)
    out.line(outcome)
    missing = len(ids) - archived if args.ids else 0
    if missing:
        out.error(f"{missing} of the ids given are not in the DLQ")
    return 1 if missing else 0


def _unarchive(args: argparse.Namespace, out: Output) -> int:
    """Show archived dead letters again (ls, replay and the others see them). Ids that
    are not archived are counted and left alone; the exit status is then 1."""
    with open_store(args.dlq, args.dlq_table) as store:
        ids = [parse_id(text) for text in args.ids]
        shown = store.unarchive(ids)
        outcome = f"unarchived {shown} dead letter(s)"
        record(store, args, "unarchive", ids, outcome)
    out.line(outcome)
    if shown < len(set(ids)):
        out.error(f"{len(set(ids)) - shown} of the ids given are not archived dead letters")
        return 1
    return 0


def _expire(args: argparse.Namespace, out: Output) -> int:
    """Delete the archived dead letters whose retention has ended. Run it from cron or
    a systemd timer; dead letters not archived are never touched."""
    with open_store(args.dlq, args.dlq_table) as store:
        deleted = store.expire()
        outcome = f"expired {deleted} archived dead letter(s)"
        record(store, args, "expire", [], outcome, total=deleted)
    out.line(outcome)
    return 0
