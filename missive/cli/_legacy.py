"""``missive dlq import-legacy``: copy a missive 0.8.1 DLQ's dead letters into a DLQ of
today's schema.

::

    missive dlq import-legacy --from old-dlq.db --dlq dlq.db

The 0.8.1 file is only read, never changed, and nothing in it is unpickled: 0.8.1
stored each message as a pickle, which can run any code when loaded, so those rows
are listed, one line each, as ``ID  pickled, not imported``. A row holding the
message's own bytes is imported as a RawMessage with its id, reason and time.

Exit status: 0 when every row was imported, 1 when some were left out (or on an error).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from missive.cli._common import CLIError, format_id, redact
from missive.cli._output import Output
from missive.dlq import open_dlq
from missive.dlq._legacy import import_legacy
from missive.dlq._location import sqlite_path
from missive.errors import DLQError

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``import-legacy`` under ``missive dlq``."""
    command = sub.add_parser(
        "import-legacy",
        help="copy a missive 0.8.1 DLQ's dead letters into this schema (pickles are not)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="OLD.db",
        help="the SQLite file written by missive 0.8.1's SQLiteDLQ (only read)",
    )
    # Spelled as the other dlq commands spell it; not imported from their module,
    # which is being reshaped.
    command.add_argument(
        "--dlq",
        metavar="PATH_OR_URL",
        default=argparse.SUPPRESS,
        help="the DLQ to import into, created if missing (default: $MISSIVE_DLQ)",
    )
    command.add_argument(
        "--dlq-table", metavar="NAME", default=argparse.SUPPRESS, help="a PostgreSQL DLQ's table"
    )
    command.set_defaults(func=_import_legacy)


def _import_legacy(args: argparse.Namespace, out: Output) -> int:
    location = getattr(args, "dlq", None) or os.environ.get("MISSIVE_DLQ", "")
    if not location:
        raise CLIError("no DLQ to import into: pass --dlq PATH_OR_URL or set MISSIVE_DLQ")
    target = sqlite_path(location)
    if target and Path(target).resolve() == Path(args.source).resolve():
        raise CLIError("--from and --dlq name the same file: import into a new DLQ file")
    options: dict[str, Any] = {}
    table = getattr(args, "dlq_table", None)
    if table and target is None:
        options["table"] = table
    shown = redact(location)
    try:
        store = open_dlq(location, **options)
    except DLQError as exc:
        raise CLIError(f"cannot open the DLQ {shown!r}: {str(exc).splitlines()[0]}") from None
    try:
        report = import_legacy(args.source, store)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    for message_id in report.pickled:
        out.line(f"{format_id(message_id)}  pickled, not imported")
    for message_id in report.unreadable:
        out.line(f"{format_id(message_id)}  no bytes in message_bytes, not imported")
    left_out = len(report.pickled) + len(report.unreadable)
    out.note(
        f"imported {len(report.imported)} dead letters from {args.source!r} into {shown!r}; "
        f"{left_out} not imported ({len(report.pickled)} pickled)"
    )
    return 1 if left_out else 0
