"""``missive routes check``: which handler each sample message would go to.

A way to find gaps (no handler matches) and overlaps (several do) in a processor's
matchers before deploying it.
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections import Counter
from collections.abc import Iterator
from typing import IO, Any

from missive.adapters._lines import DEFAULT_MAX_LINE_SIZE, LongLine, NotYet, open_lines
from missive.cli._common import CLIError, format_id, import_object, load_processor, open_store
from missive.cli._dlq import add_table_option
from missive.cli._output import Output, safe_text
from missive.errors import MessageDecodeError
from missive.message import JSONMessage, Message
from missive.routing import NoRoute, Router

__all__ = ["Route", "add_parser", "load_message_class", "route"]


class Route(enum.Enum):
    """Where routing sends a message."""

    #: Exactly one handler matches.
    ONE = "routed"
    #: No handler matches: a gap.
    NONE = "unmatched"
    #: Several handlers match: an overlap.
    SEVERAL = "ambiguous"
    #: A matcher raised (or the message could not be decoded).
    ERROR = "error"


_KINDS = {"unmatched": Route.NONE, "ambiguous": Route.SEVERAL, "error": Route.ERROR}


def route(router: Router[Any], message: Message) -> tuple[Route, str]:
    """Where ``router`` would send ``message``, and a line saying so (no payload).

    The line is the handler's name, or the summary of the dead-letter reason the
    processor would give. A message that cannot be decoded also says where, to
    help fix the sample.
    """
    found = router.match(message)
    if isinstance(found, NoRoute):
        reason = found.reason
        error = reason.exception
        text = reason.summary
        if isinstance(error, MessageDecodeError) and error.detail is not None:
            text = f"{text} {error.detail}"
        return _KINDS[found.kind], text
    return Route.ONE, found.name


def load_message_class(path: str) -> type[Message]:
    """The :class:`~missive.Message` subclass at ``module:Class``.

    :raises CLIError: if it does not import or is not a Message subclass.
    """
    found = import_object(path, "message class")
    if not (isinstance(found, type) and issubclass(found, Message)):
        raise CLIError(f"{path!r} is not a missive.Message subclass")
    return found


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``routes check`` to the command's subparsers."""
    routes = sub.add_parser("routes", help="check a processor's routing on sample messages")
    routes_sub = routes.add_subparsers(dest="routes_command", metavar="COMMAND", required=True)
    check = routes_sub.add_parser(
        "check",
        help="report the handler each sample message would go to",
        description=_check.__doc__,
    )
    check.add_argument("processor", metavar="MODULE:PROCESSOR", help="a processor or adapter")
    source = check.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "file", nargs="?", metavar="FILE", help="sample messages, one a line ('-': stdin)"
    )
    source.add_argument(
        "--dlq",
        nargs="?",
        const="",
        metavar="PATH_OR_URL",
        help="read the dead letters of this DLQ instead (default: $MISSIVE_DLQ)",
    )
    add_table_option(check, default=None)
    check.add_argument(
        "--message-class",
        metavar="MODULE:CLASS",
        help="build messages as this class (default: the adapter's class if "
        "MODULE:PROCESSOR is an adapter, else missive.JSONMessage; with --dlq, "
        "the class each was stored with)",
    )
    check.add_argument(
        "-q", "--quiet", action="store_true", help="list only the messages not routed to one"
    )
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace, out: Output) -> int:
    """Read sample messages and say, for each, the handler it would go to, or that
    none or several match. Exit status 1 if any message is not routed to exactly one
    handler. Matchers run, handlers and hooks do not."""
    processor, adapter_class = load_processor(args.processor)
    explicit = load_message_class(args.message_class) if args.message_class else None
    counts: Counter[Route] = Counter()
    rows: list[list[str]] = []
    for where, message in _samples(args, explicit, adapter_class or JSONMessage):
        if isinstance(message, str):  # a sample that cannot be a message
            result, text = Route.ERROR, message
        else:
            result, text = route(processor.router, message)
        counts[result] += 1
        if result is not Route.ONE or not args.quiet:
            colour = "green" if result is Route.ONE else "red"
            rows.append([where, out.style(result.value, colour), safe_text(text)])
    out.table(["MESSAGE", "RESULT", "HANDLER"], rows, wide=2)
    total = sum(counts.values())
    parts = ", ".join(f"{counts[r]} {r.value}" for r in Route if counts[r] or r is Route.ONE)
    out.note(f"{total} message(s): {parts}")
    return 0 if counts[Route.ONE] == total else 1


def _samples(
    args: argparse.Namespace, explicit: type[Message] | None, default: type[Message]
) -> Iterator[tuple[str, Message | str]]:
    # Each sample as a message, or as the text saying why it cannot be one.
    if args.dlq is not None:
        with open_store(args.dlq, args.dlq_table, read_only=True) as store:
            for record in store.records():
                message = record.message
                if explicit is not None and type(message) is not explicit:
                    message = explicit(message.raw_data, record.message_id, record.attributes)
                yield safe_text(format_id(record.message_id)), message
        return
    cls = explicit or default
    stream: IO[bytes]
    if args.file == "-":
        stream = sys.stdin.buffer
    else:
        try:
            stream = open(args.file, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise CLIError(f"cannot read {args.file!r}: {exc.strerror}") from None
    lines = open_lines(stream, DEFAULT_MAX_LINE_SIZE)
    try:
        number = 0
        while (line := lines.next()) is not None:
            assert not isinstance(line, NotYet)  # only a timeout gives that
            number += 1
            if isinstance(line, LongLine):
                yield f"line {number}", (
                    f"line of {line.size} bytes, longer than the {DEFAULT_MAX_LINE_SIZE} "
                    "bytes a message may be"
                )
            else:
                yield f"line {number}", cls(line, None, {"line": number})
    finally:
        lines.close()
        if stream is not sys.stdin.buffer:
            stream.close()
