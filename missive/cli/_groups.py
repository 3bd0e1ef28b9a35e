"""``missive dlq groups``: the dead letters grouped by failure, the largest first."""

from __future__ import annotations

import argparse
import json
from typing import Any

from missive.cli._common import open_store
from missive.cli._filters import add_dlq_option, add_filters, count, selected
from missive.cli._output import Output, safe_text
from missive.cli._show import when
from missive.dlq.groups import Group, group_records

__all__ = ["add_parser", "group_json"]


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``groups`` under ``missive dlq``."""
    groups = sub.add_parser(
        "groups", help="dead letters grouped by failure, the largest group first"
    )
    groups.description = _groups.__doc__
    add_dlq_option(groups)
    add_filters(groups)
    groups.add_argument("--limit", type=count, metavar="N", help="at most N groups")
    groups.add_argument("--json", action="store_true", help="one JSON object a line, for scripts")
    groups.set_defaults(func=_groups)


def group_json(group: Group) -> dict[str, Any]:
    """A group as JSON-ready values."""
    return {
        "id": group.id,
        "kind": group.kind,
        "count": group.count,
        "first_seen": group.first_seen.isoformat(),
        "last_seen": group.last_seen.isoformat(),
        "handlers": list(group.handlers),
        "exc_type": group.exc_type,
        "example": group.example,
    }


def _groups(args: argparse.Namespace, out: Output) -> int:
    """List failure groups, the most dead letters first: the group's id (for --group
    on ls, replay, purge and export), how many, when first and last seen, the handler
    (or how many handlers) and an example reason (a summary: never the payload). Dead
    letters fall in one group when they failed the same way: the same exception type,
    message with its numbers, ids and quoted values left out, and frames of the code
    that raised; or the same kind of decode, routing or delivery failure. With
    --json, one JSON object a line."""
    with open_store(args.dlq, args.dlq_table, read_only=True) as store:
        groups = group_records(selected(store, args))
    if args.limit is not None:
        groups = groups[: args.limit]
    if args.json:
        for group in groups:
            out.line(json.dumps(group_json(group)))
        return 0
    rows = [
        [
            group.id,
            str(group.count),
            when(group.first_seen),
            when(group.last_seen),
            safe_text(_handlers(group.handlers)),
            safe_text(group.example),
        ]
        for group in groups
    ]
    out.table(["GROUP", "COUNT", "FIRST", "LAST", "HANDLER", "EXAMPLE"], rows, wide=5)
    if out.tty and not rows:
        out.note("no dead letters")
    return 0


def _handlers(names: tuple[str, ...]) -> str:
    if not names:
        return "-"
    if len(names) == 1:
        return names[0]
    return f"{names[0]} and {len(names) - 1} more"
