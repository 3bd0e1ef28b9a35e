"""The options the ``missive dlq`` commands share: which DLQ, and which dead letters.

``selected`` applies the filters to a store; ``--group`` is applied here, by
fingerprint (:mod:`missive.dlq.groups`), since no store keeps fingerprints.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from missive.cli._common import CLIError, parse_time, safe_repr
from missive.dlq import DeadLetter, DeadLetterStore
from missive.dlq.groups import in_group, is_fingerprint

__all__ = [
    "add_dlq_option",
    "add_filters",
    "add_group_option",
    "add_table_option",
    "count",
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
    """Add the filters of :meth:`DeadLetterStore.records`, ``--group`` and
    ``--archived`` to ``parser``."""
    parser.add_argument("--reason", metavar="TEXT", help="only reasons containing TEXT")
    parser.add_argument("--handler", metavar="NAME", help="only those from handler NAME")
    parser.add_argument(
        "--since", metavar="TIME", type=_time, help="only those dead-lettered at or after TIME"
    )
    parser.add_argument(
        "--before", metavar="TIME", type=_time, help="only those dead-lettered before TIME"
    )
    add_group_option(parser)
    parser.add_argument(
        "--archived",
        action="store_true",
        help="only archived ones (missive dlq archive), which are left out otherwise",
    )


def add_group_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--group ID`` (a fingerprint, as ``missive dlq groups`` lists it) to ``parser``."""
    parser.add_argument(
        "--group",
        metavar="ID",
        type=_group,
        help="only those of failure group ID (missive dlq groups lists them)",
    )


def _group(text: str) -> str:
    group = text.strip().lower()
    if not is_fingerprint(group):
        raise argparse.ArgumentTypeError(
            f"must be a group id of 10 hex digits, as missive dlq groups lists it, "
            f"not {safe_repr(text)}"
        )
    return group


def _time(text: str) -> datetime:
    try:
        return parse_time(text)
    except CLIError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def count(text: str) -> int:
    """A whole number of 0 or more, for an option's ``type``."""
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
    """The records that the filters in ``args`` select, oldest first.

    A filter that ``args`` lacks (a command without that option) selects all, but
    archived dead letters only with ``--archived`` (and then only them).
    """
    group: str | None = getattr(args, "group", None)
    records = store.records(
        reason=getattr(args, "reason", None),
        handler=getattr(args, "handler", None),
        since=getattr(args, "since", None),
        before=getattr(args, "before", None),
        limit=limit if group is None else None,
        archived=bool(getattr(args, "archived", False)),
    )
    if group is None:
        return records
    return itertools.islice(in_group(records, group), limit)
