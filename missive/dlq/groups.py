"""Failure groups: dead letters that failed the same way share a fingerprint.

A fingerprint is computed from what every DLQ already stores (the reason, its
summary, the exception's type and the traceback), so it needs no schema change and
works on dead letters written before it existed. It is the first 10 hex digits of
a SHA-256 over the failure's *kind* and the parts that say which bug it is:

* **exception**: the exception's type, its message normalised (numbers, ids, hex,
  UUIDs, quoted values, e-mail, IP and URL-like addresses replaced by placeholders,
  so that the same bug with other data falls in the same group), and the innermost
  frames of the traceback in the user's code (file and function, not the line
  number, so that an unrelated edit above does not split a group; frames of
  Missive, the standard library and installed packages are left out);
* **decode**: the decoder's problem, without positions;
* **no-handler**, **ambiguous** (the handlers' names), **poison** (delivered more
  than ``max_deliveries``), **unsettled** and **retry** (the handler's name),
  **nacked**: Missive's own reasons, by their kind;
* **other**: any other reason, its summary normalised.

What a group shows as its example is a summary, which never quotes the payload.
"""

from __future__ import annotations

import hashlib
import re
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath

from missive.dlq.base import DeadLetter
from missive.routing import NO_HANDLER, UNDECODABLE

__all__ = ["Group", "fingerprint", "group_records", "in_group", "is_fingerprint"]

#: How many user frames, innermost first, count in an exception's fingerprint.
FRAMES = 3
#: How many hex digits a fingerprint has.
LENGTH = 10
#: How much of an exception's message is normalised and counted.
_MESSAGE_LIMIT = 500

_PLACEHOLDERS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), placeholder)
    for pattern, placeholder in (
        (r"(?<![\w])'[^'\n]*'(?![\w])", "<str>"),
        (r'"[^"\n]*"', "<str>"),
        (r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", "<url>"),
        (r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", "<email>"),
        (r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b", "<uuid>"),
        (r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b", "<ip>"),
        (r"(?<![\w:])(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?![\w:])", "<ip>"),
        (r"\b0x[0-9a-f]+\b", "<hex>"),
        (r"\b(?=[a-f]*\d)[0-9a-f]{8,}\b", "<hex>"),
        (r"\b(?=[\w-]*[a-z])(?=[\w-]*\d)\w+(?:[-_]\w+)*\b", "<id>"),
        (r"\b\d+(?:\.\d+)?\b", "<n>"),
    )
)

_FRAME = re.compile(r'^[ \t|]*File "(?P<path>[^"\n]*)", line \d+, in (?P<func>[^\n]+)$', re.M)
_TRACEBACK = re.compile(
    r"^[ \t|+-]*(?:Exception Group )?Traceback \(most recent call last\):", re.M
)
_LIBRARY_SEGMENTS = frozenset({"site-packages", "dist-packages"})
_STDLIB = re.compile(r"(?:^|/)lib(?:64)?/python\d+(?:\.\d+)?/")
_MISSIVE = Path(__file__).resolve().parents[1]
_ROOTS = tuple(
    {
        str(Path(path).resolve())
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (path := sysconfig.get_paths().get(key))
    }
    | {str(_MISSIVE)}
)

_UNDECODABLE = UNDECODABLE.partition("{")[0]
_SEVERAL = re.compile(r"\d+ handlers matched the message, exactly one must: (?P<names>.*)")
_POISON = re.compile(r"delivered \d+ times, more than max_deliveries=")
_UNSETTLED = re.compile(r"handler (?P<name>.*) returned without acking or nacking")
_RETRY = re.compile(r"handler (?P<name>.*) asked for a retry")
_NACKED = "nacked by its handler"
_NOTE = "; not retried later"


@dataclass(frozen=True, slots=True)
class Group:
    """Dead letters that share a fingerprint, summed up.

    Nothing in it quotes a payload: ``example`` is a reason's summary.
    """

    #: The fingerprint the group's dead letters share.
    id: str
    #: What failed: ``exception``, ``decode``, ``no-handler``, ``ambiguous``,
    #: ``poison``, ``unsettled``, ``retry``, ``nacked`` or ``other``.
    kind: str
    #: How many dead letters are in it.
    count: int
    #: When the first of them was first dead-lettered (aware, UTC).
    first_seen: datetime
    #: When the last of them was last dead-lettered (aware, UTC).
    last_seen: datetime
    #: The handlers they were dead-lettered from, sorted (empty if none was chosen).
    handlers: tuple[str, ...]
    #: The summary of the most recent one's reason.
    example: str
    #: The exception's type name, for an ``exception`` or ``decode`` group.
    exc_type: str | None


def fingerprint(record: DeadLetter) -> str:
    """The fingerprint of ``record``: 10 hex digits, the same for the same failure."""
    return _digest(_parts(record))


def failure_kind(record: DeadLetter) -> str:
    """The kind of failure of ``record``, as :attr:`Group.kind` names it."""
    return _parts(record)[0]


def is_fingerprint(text: str) -> bool:
    """Whether ``text`` is written as a fingerprint is (10 lowercase hex digits)."""
    return len(text) == LENGTH and all(c in "0123456789abcdef" for c in text)


def in_group(records: Iterable[DeadLetter], group: str) -> Iterator[DeadLetter]:
    """Those of ``records`` whose fingerprint is ``group``, in their order."""
    return (record for record in records if fingerprint(record) == group)


def group_records(records: Iterable[DeadLetter]) -> list[Group]:
    """The groups of ``records``, most dead letters first (then the latest first)."""
    found: dict[str, _Tally] = {}
    for record in records:
        parts = _parts(record)
        key = _digest(parts)
        tally = found.get(key)
        if tally is None:
            found[key] = _Tally(key, parts[0], record)
        else:
            tally.add(record)
    groups = [tally.group() for tally in found.values()]
    groups.sort(key=lambda g: g.id)
    groups.sort(key=lambda g: (g.count, g.last_seen), reverse=True)
    return groups


class _Tally:
    """A group being counted."""

    __slots__ = ("count", "first", "handlers", "key", "kind", "latest")

    def __init__(self, key: str, kind: str, record: DeadLetter) -> None:
        self.key = key
        self.kind = kind
        self.count = 1
        self.first = record.first_dead_lettered_at
        self.latest = record
        self.handlers = {record.handler} if record.handler else set()

    def add(self, record: DeadLetter) -> None:
        self.count += 1
        self.first = min(self.first, record.first_dead_lettered_at)
        if record.dead_lettered_at >= self.latest.dead_lettered_at:
            self.latest = record
        if record.handler:
            self.handlers.add(record.handler)

    def group(self) -> Group:
        latest = self.latest
        return Group(
            id=self.key,
            kind=self.kind,
            count=self.count,
            first_seen=self.first,
            last_seen=latest.dead_lettered_at,
            handlers=tuple(sorted(self.handlers)),
            example=latest.summary,
            exc_type=latest.exc_type,
        )


def normalise(text: str) -> str:
    """``text`` with what varies from one message to the next replaced by placeholders."""
    for pattern, placeholder in _PLACEHOLDERS:
        text = pattern.sub(placeholder, text)
    return " ".join(text.split())


def user_frames(traceback: str | None) -> list[str]:
    """The innermost :data:`FRAMES` frames of the user's code in ``traceback``, as
    ``dir/file.py:function``, outermost first. Only the last exception of a chain
    counts (the one raised to Missive)."""
    if not traceback:
        return []
    last = _TRACEBACK.split(traceback)[-1]
    frames = [
        f"{_short(match['path'])}:{match['func'].strip()}"
        for match in _FRAME.finditer(last)
        if not _is_library(match["path"])
    ]
    return frames[-FRAMES:]


def _parts(record: DeadLetter) -> tuple[str, ...]:
    summary = record.summary
    if summary.startswith(_UNDECODABLE):
        problem = summary[len(_UNDECODABLE) :].split(_NOTE)[0]
        return ("decode", normalise(problem))
    if summary.startswith(NO_HANDLER) or summary == "no handler matched":
        return ("no-handler",)
    if match := _SEVERAL.match(summary):
        return ("ambiguous", match["names"].split(_NOTE)[0])
    if _POISON.match(summary):
        return ("poison",)
    if match := _UNSETTLED.match(summary):
        return ("unsettled", match["name"])
    if match := _RETRY.match(summary):
        return ("retry", match["name"])
    if summary.startswith(_NACKED):
        return ("nacked", record.handler or "")
    if record.exc_type:
        message = normalise(_message(record))
        return ("exception", record.exc_type, message, *user_frames(record.traceback))
    return ("other", normalise(summary))


def _message(record: DeadLetter) -> str:
    """The first line of the exception's message, read from the full reason (which
    is ``<what> raised <type>: <message>``), else from the traceback's last line."""
    full, summary = str(record.reason), record.summary
    marker = f" raised {record.exc_type}"
    cut = summary.find(marker)
    if cut >= 0:
        prefix = summary[: cut + len(marker)]
        note = summary[len(prefix) :]
        if full.startswith(prefix + ": "):
            line = full[len(prefix) + 2 :].split("\n", 1)[0]
            if note and line.endswith(note):
                line = line[: -len(note)]
            return line[:_MESSAGE_LIMIT]
        if full.startswith(prefix):
            return ""
    lines = [line for line in (record.traceback or "").splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    head, sep, text = last.partition(": ")
    return (text if sep and head.endswith(record.exc_type or "") else last)[:_MESSAGE_LIMIT]


def _is_library(path: str) -> bool:
    """Whether a traceback's ``path`` is Missive's, the standard library's or an
    installed package's, here or on the machine that wrote it."""
    if path.startswith("<frozen "):
        return True
    posix = path.replace("\\", "/")
    if _LIBRARY_SEGMENTS.intersection(posix.split("/")) or _STDLIB.search(posix):
        return True
    if any(posix.startswith(root + "/") for root in _ROOTS):
        return True
    # Missive from a checkout elsewhere: .../missive/<a module this package has>.
    _, sep, tail = posix.rpartition("/missive/")
    return bool(sep) and tail.endswith(".py") and (_MISSIVE / tail).is_file()


def _short(path: str) -> str:
    """The last two components of ``path``: stable across checkouts and releases."""
    parts = PurePath(path.replace("\\", "/")).parts
    return "/".join(parts[-2:])


def _digest(parts: tuple[str, ...]) -> str:
    data = "\x1f".join(parts).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:LENGTH]
