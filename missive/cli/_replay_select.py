"""Which dead letters a replay takes: IDs, ``--all`` or filters, read oldest first.

Shared by both kinds of replay (in process and ``--to-broker``).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterable, Iterator

from missive.cli._common import CLIError, parse_id
from missive.cli._filters import selected
from missive.dlq import DeadLetter, DeadLetterStore

__all__ = ["chosen_ids", "letters", "stored"]


def chosen_ids(store: DeadLetterStore, args: argparse.Namespace) -> list[bytes]:
    """The ids the command line chose.

    :raises CLIError: unless exactly one of IDs, ``--all`` or filters is given, or
        if an id given is not in the DLQ.
    """
    filtered = args.reason is not None or args.group is not None
    if sum([bool(args.ids), args.all, filtered]) != 1:
        raise CLIError(
            "replay needs exactly one of: IDs, --all, or filters (--reason TEXT, --group ID)"
        )
    if args.all:
        return list(store)  # the ids alone: no record to decode
    if filtered:
        return [record.message_id for record in selected(store, args)]
    ids = [parse_id(text) for text in args.ids]
    missing = [text for text, i in zip(args.ids, ids, strict=True) if i not in store]
    if missing:
        raise CLIError(f"no dead letter with id {', '.join(map(repr, missing))}; nothing replayed")
    return ids


def stored(store: DeadLetterStore, ids: Iterable[bytes]) -> Iterator[DeadLetter]:
    """The records of ``ids`` still in ``store``, in their order (the others skipped)."""
    for message_id in ids:
        with contextlib.suppress(KeyError):
            yield store.record(message_id)


def letters(
    store: DeadLetterStore, args: argparse.Namespace
) -> tuple[int, Callable[[], Iterator[DeadLetter]], Callable[[], int]]:
    """How many dead letters were chosen, an iterator over their records, oldest first,
    read a page at a time, and a function counting those found gone afterwards.

    The ids are chosen at the start (a snapshot): letters dead-lettered while the
    replay runs wait for the next one.
    """
    ids = chosen_ids(store, args)
    chosen = dict.fromkeys(ids)
    seen: set[bytes] = set()

    def records() -> Iterator[DeadLetter]:
        if args.ids:
            for message_id in ids:
                with contextlib.suppress(KeyError):
                    record = store.record(message_id)
                    seen.add(message_id)
                    yield record
            return
        for record in store.records(reason=args.reason):
            if record.message_id in chosen and record.message_id not in seen:
                seen.add(record.message_id)
                yield record
                if len(seen) == len(chosen):
                    return

    return len(chosen), records, lambda: len(chosen) - len(seen)
