"""``missive dlq replay``: put dead letters back through a processor once the bug is fixed.

Each dead letter is processed again, as an adapter would: the ``before_processing``
hooks run once first and the ``after_processing`` hooks once at the end, and each
message goes through routing, the handling hooks and its handler. The processor's
DLQ is, for the replay, the DLQ being replayed, so that:

* **acked**: the dead letter is deleted from the DLQ;
* **dead-lettered again**: it stays, with its new reason, and its count goes up;
* **nacked** (the handler asks for a later redelivery): it stays unchanged and is
  reported; replay it again later.

Dead letters handled are deleted in batches, one commit every --batch of them
(500) or every second: a replay killed between two commits handles again, the
next time, at most the letters since the last commit (at least once). --rate N/s
(or N/m, N/h) spaces them out. SIGINT or SIGTERM stops the replay after the letter
in hand, commits and exits with status 5; the same command run again replays what
is left.

--to-broker publishes them instead back to the broker they came from (the one of
--broker-url or $MISSIVE_BROKER_URL: amqp://, redis://, nats://, mqtt://), for the workers;
each is deleted once the broker confirmed it. No processor is needed.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from typing import Any

from missive.cli._common import CLIError, format_id, load_processor, open_store
from missive.cli._dlq import add_dlq_option
from missive.cli._filters import add_group_option
from missive.cli._output import Output, safe_text
from missive.cli._replay_loop import BATCH, Deletes, InProcess, Replay, Stop, summarise
from missive.cli._replay_pace import (
    RateLimit,
    ReplayProgress,
    batch_option,
    on_terminal,
    rate_option,
)
from missive.cli._replay_select import chosen_ids, letters, stored
from missive.cli._routes import Route, load_message_class, route
from missive.dlq import DeadLetter, DeadLetterStore
from missive.message import Message
from missive.processor import Processor
from missive.routing import Router

__all__ = ["STOPPED", "add_parser"]

#: The exit status of a replay stopped by SIGINT or SIGTERM before its end.
STOPPED = 5


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``replay`` under ``missive dlq``."""
    replay = sub.add_parser(
        "replay",
        help="process dead letters again; those handled leave the DLQ",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dlq_option(replay)
    replay.add_argument(
        "--processor",
        metavar="MODULE:PROCESSOR",
        help="a processor or adapter (needed unless --to-broker)",
    )
    replay.add_argument(
        "--to-broker",
        action="store_true",
        help="publish them back to the broker they came from; each leaves once confirmed",
    )
    replay.add_argument(
        "--broker-url",
        metavar="URL",
        help="with --to-broker: amqp://, redis://... (default: $MISSIVE_BROKER_URL)",
    )
    replay.add_argument(
        "--stream-field",
        default="data",
        metavar="NAME",
        help="with --to-broker, Redis Streams: the field for the bytes (default data)",
    )
    replay.add_argument("ids", nargs="*", metavar="ID", help="the dead letters to replay")
    replay.add_argument("--all", action="store_true", help="replay every dead letter")
    replay.add_argument("--reason", metavar="TEXT", help="replay those whose reason has TEXT")
    add_group_option(replay)
    replay.add_argument(
        "--message-class",
        metavar="MODULE:CLASS",
        help="rebuild each message as this class (default: the class it was stored with)",
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="only say which handler each would go to"
    )
    replay.add_argument(
        "--rate",
        type=rate_option,
        metavar="N/s",
        help="replay at most N a second (N/m: a minute, N/h: an hour)",
    )
    replay.add_argument(
        "--batch",
        type=batch_option,
        default=BATCH,
        metavar="N",
        help=f"commit the deletes of handled letters every N of them (default {BATCH})",
    )
    replay.add_argument(
        "-v", "--verbose", action="store_true", help="list the dead letters handled too"
    )
    replay.set_defaults(func=_replay)


class _Rebuild:
    """Gives each record's message as the class to replay it as, or ``None`` to skip it.

    A message whose stored class the processor's modules do not define is skipped
    unless a class to use instead is known (``--message-class``, or the adapter's):
    replaying it as a RawMessage would fail, and store it again under that class.
    """

    def __init__(self, out: Output, explicit: type[Message] | None, fallback: type[Message] | None):
        self.out = out
        self.explicit = explicit
        self.fallback = fallback
        self.warned: set[str] = set()

    def __call__(self, record: DeadLetter) -> Message | None:
        message = record.message
        cls = self.explicit
        if cls is None and message.class_name != record.message_class:
            cls = self.fallback
            if record.message_class not in self.warned:
                self.warned.add(record.message_class)
                what = "skipping those" if cls is None else f"replaying as {cls.__name__}"
                self.out.warn(
                    f"message class {record.message_class} is not defined by the processor's "
                    f"modules: {what} (pass --message-class MODULE:CLASS)"
                )
            if cls is None:
                return None
        if cls is None or type(message) is cls:
            return message
        return cls(message.raw_data, record.message_id, record.attributes)


def _replay(args: argparse.Namespace, out: Output) -> int:
    if args.to_broker:
        return _to_broker(args, out)
    if args.broker_url:
        raise CLIError("--broker-url is for --to-broker")
    if not args.processor:
        raise CLIError("replay needs --processor MODULE:PROCESSOR (or --to-broker)")
    processor, adapter_class = load_processor(args.processor)
    explicit = load_message_class(args.message_class) if args.message_class else None
    rebuild = _Rebuild(out, explicit, adapter_class)
    with open_store(args.dlq, args.dlq_table) as store:
        if args.dry_run:
            return _dry_run(store, chosen_ids(store, args), rebuild, processor.router, out)
        total, records, gone = letters(store, args)
        if not total:
            out.note("no dead letters to replay")
            return 0
        previous = processor.dlq
        processor.set_dlq(store)
        # The report says what became of each message; the processor's own line is noise.
        processor_logger = logging.getLogger("missive.processor")
        level = processor_logger.level
        processor_logger.setLevel(logging.ERROR)
        try:
            with Stop().installed() as stop:
                replay = _process(store, total, records(), rebuild, processor, out, args, stop)
        finally:
            processor.set_dlq(previous)
            processor_logger.setLevel(level)
    return _summary(replay, total, gone(), stop, args, out)


def _to_broker(args: argparse.Namespace, out: Output) -> int:
    if args.processor or args.message_class:
        raise CLIError("--to-broker sends the stored bytes: no --processor or --message-class")
    from missive.cli._republish import replay_to_broker  # its publishers need extras

    with open_store(args.dlq, args.dlq_table) as store:
        return replay_to_broker(store, args, out)


def _summary(
    replay: Replay, total: int, gone: int, stop: Stop, args: argparse.Namespace, out: Output
) -> int:
    counts = replay.counts
    outcomes = [
        f"{counts['acked']} handled and removed",
        f"{counts['failed']} failed again (kept)",
        f"{counts['nacked']} nacked (kept)",
    ]
    if counts["skipped"]:
        outcomes.append(f"{counts['skipped']} skipped (kept)")
    if summarise(
        replay, total, gone, stop, out, outcomes, did="replayed", do="replay", removed="handled"
    ):
        return STOPPED
    return 1 if counts["failed"] or counts["nacked"] or counts["skipped"] else 0


def _process(
    store: DeadLetterStore,
    total: int,
    records: Iterator[DeadLetter],
    rebuild: _Rebuild,
    processor: Processor[Message],
    out: Output,
    args: argparse.Namespace,
    stop: Stop,
) -> Replay:
    try:
        context = processor.context().__enter__()
    except Exception as exc:
        raise CLIError(
            f"the processor's before_processing hooks raised {type(exc).__name__}: {exc}; "
            "nothing replayed"
        ) from None
    failed: BaseException | None = None
    limit = RateLimit(args.rate) if args.rate is not None else None
    replay = Replay(
        InProcess(context),
        Deletes(store, batch=args.batch),
        rebuild,
        out,
        verbose=args.verbose,
        limit=limit,
        stop=stop,
    )
    try:
        if on_terminal(out.stderr):
            out.progress = ReplayProgress(out.stderr, total)
        replay.run(records)
    except BaseException as exc:
        failed = exc
        raise
    finally:
        out.end_progress()
        try:
            context.__exit__(None if failed is None else type(failed), failed, None)
        except Exception as exc:
            out.error(f"the processor's after_processing hooks raised {type(exc).__name__}: {exc}")
            if failed is None:
                raise CLIError("replay finished, but the after_processing hooks failed") from None
    return replay


def _dry_run(
    store: DeadLetterStore, ids: list[bytes], rebuild: _Rebuild, router: Router[Any], out: Output
) -> int:
    rows = []
    for record in stored(store, ids):
        message_id = record.message_id
        message = rebuild(record)
        if message is None:
            rows.append([safe_text(format_id(message_id)), out.style("skipped", "red"), "-"])
            continue
        result, text = route(router, message)
        colour = "green" if result is Route.ONE else "red"
        rows.append(
            [safe_text(format_id(message_id)), out.style(result.value, colour), safe_text(text)]
        )
    out.table(["ID", "RESULT", "HANDLER"], rows, wide=2)
    out.note(f"dry run: {len(rows)} dead letter(s) checked, none replayed")
    return 0
