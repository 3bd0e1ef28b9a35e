"""Delayed retries on Redis Streams: a sorted set of due copies, and the two scripts.

A message retried later leaves the stream for ``<stream>:missive-delayed:<group>``,
a sorted set scored by when it is due (epoch milliseconds, Redis's clock), each
member a JSON object ``{"token": ..., "fields": [name, value, ...]}``: the fields to
add back (the entry's own, the attempt state, the original id) and a random token,
so that two identical copies never collapse into one member. Two Lua scripts keep
each step atomic, so a crash neither loses nor doubles a copy:

* :data:`SCHEDULE` XACKs the entry and ZADDs its copy, only if the XACK settled it
  (an entry already acked by a consumer that claimed it is not copied again);
* :data:`MOVE` XADDs up to ``limit`` due copies back to the stream and ZREMs them.
  Redis runs one script at a time, so any number of workers may move at once.

The copy carries ``x-missive-group``: other groups reading the stream skip it (a
missive consumer acks it unhandled). Private: imported only after redis-py.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import redis

from missive.attempts import FIRST_ATTEMPT, HISTORY, RETRIES

__all__ = [
    "GROUP_FIELD",
    "ID_FIELD",
    "MOVE_LIMIT",
    "Copy",
    "DelayedSet",
    "delayed_key",
    "read_copy",
]

logger = logging.getLogger("missive.adapters.redis")

#: The prefix of every field the copies carry; the entry's own fields never have it.
PREFIX = b"x-missive-"
#: The field holding the message's id: its first entry's id.
ID_FIELD = b"x-missive-id"
#: The field holding the deliveries before this copy's.
DELIVERIES_FIELD = b"x-missive-deliveries"
#: The field naming the group the copy is for.
GROUP_FIELD = b"x-missive-group"
#: The most due copies one run of :data:`MOVE` moves.
MOVE_LIMIT = 100
#: The shortest and longest waits, in seconds, between two looks for due copies (the
#: workers that schedule copies look again when theirs are due; the longest wait is
#: for the copies of a worker that died).
MOVE_EVERY, MOVE_IDLE = 0.1, 1.0

_RETRIES_FIELD = RETRIES.encode()
_FIRST_FIELD = FIRST_ATTEMPT.encode()
_HISTORY_FIELD = HISTORY.encode()

# KEYS: stream, delayed set. ARGV: group, entry id, delay (ms), token, the message
# field's name and bytes (used only if the entry is gone from the stream), then the
# attempt fields (name, value, ...). Returns 1, or 0 when the entry was not pending.
SCHEDULE = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
local fields = {}
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])[1]
if entry then
  local own = entry[2]
  for i = 1, #own, 2 do
    if string.sub(own[i], 1, 10) ~= 'x-missive-' then
      fields[#fields + 1] = own[i]
      fields[#fields + 1] = own[i + 1]
    end
  end
else
  fields[1] = ARGV[5]
  fields[2] = ARGV[6]
end
for i = 7, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local now = redis.call('TIME')
local due = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], string.format('%.0f', due),
  cjson.encode({token = ARGV[4], fields = fields}))
return 1
"""

# KEYS: stream, delayed set. ARGV: the most copies to move, the group. Returns
# {copies moved, ms until the next copy is due (-1: none left)}. A member that is not
# a copy (written by hand) is added as an entry without the message field, which the
# group's consumer dead-letters, rather than left to block the set.
MOVE = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', ms),
  'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local ok, copy = pcall(cjson.decode, member)
  local fields = ok and type(copy) == 'table' and copy.fields
  if type(fields) == 'table' and #fields >= 2 and #fields % 2 == 0 then
    redis.call('XADD', KEYS[1], '*', unpack(fields))
  else
    redis.call('XADD', KEYS[1], '*', 'x-missive-group', ARGV[2], 'x-missive-unreadable', member)
  end
  redis.call('ZREM', KEYS[2], member)
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then
  return {#due, math.max(0, tonumber(first[2]) - ms)}
end
return {#due, -1}
"""


def delayed_key(stream: str, group: str) -> str:
    """The sorted set holding the group's copies waiting for their retry."""
    return f"{stream}:missive-delayed:{group}"


def _encode(value: Any) -> bytes | str:
    if isinstance(value, bytes | str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return json.dumps(value, separators=(",", ":"))
    return repr(value)


class Copy:
    """What a re-added entry carries: the original id, the deliveries before it, the
    attempt state, and the entry's own fields (the copy's fields left out)."""

    __slots__ = ("deliveries", "fields", "message_id", "state")

    def __init__(
        self,
        message_id: bytes,
        deliveries: int,
        state: dict[str, Any],
        fields: dict[bytes, bytes],
    ) -> None:
        self.message_id = message_id
        self.deliveries = deliveries
        self.state = state
        self.fields = fields


def read_copy(fields: Mapping[bytes, bytes]) -> Copy | None:
    """The copy an entry's ``fields`` describe, or ``None`` for an entry never retried."""
    message_id = fields.get(ID_FIELD)
    if message_id is None:
        return None
    try:
        deliveries = max(int(fields.get(DELIVERIES_FIELD, b"0")), 0)
    except ValueError:
        deliveries = 0
    state: dict[str, Any] = {}
    own: dict[bytes, bytes] = {}
    for name, value in fields.items():
        if not name.startswith(PREFIX):
            own[name] = value
        elif name == _RETRIES_FIELD:
            try:
                state[RETRIES] = int(value)
            except ValueError:
                continue
        elif name == _FIRST_FIELD:
            try:
                moment = float(value)
            except ValueError:
                continue
            if math.isfinite(moment):
                state[FIRST_ATTEMPT] = moment
        elif name == _HISTORY_FIELD:
            try:
                history = json.loads(value)
            except ValueError:
                continue
            if isinstance(history, list):
                state[HISTORY] = history
        elif name not in (ID_FIELD, DELIVERIES_FIELD, GROUP_FIELD):
            state[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return Copy(message_id, deliveries, state, own)


class DelayedSet:
    """One group's delayed copies: scheduling one, and moving those due back.

    :param stream: the stream's key.
    :param group: the consumer group.
    :param field: the entry field holding the message's bytes.
    """

    __slots__ = ("_move", "_schedule", "field", "group", "key", "stream")

    def __init__(self, stream: str, group: str, field: bytes) -> None:
        self.stream, self.group, self.field = stream, group, field
        self.key = delayed_key(stream, group)
        self._schedule: Any = None
        self._move: Any = None

    def bind(self, client: redis.Redis) -> None:
        """Register both scripts on ``client`` (loaded on first use, again after a
        restart of Redis flushed them)."""
        self._schedule = client.register_script(SCHEDULE)
        self._move = client.register_script(MOVE)

    def schedule_args(
        self,
        entry_id: bytes,
        message_id: bytes,
        body: bytes,
        delay: float,
        deliveries: int,
        state: Mapping[str, Any],
    ) -> list[Any]:
        """The arguments of :meth:`schedule` for ``entry_id``'s copy, due in ``delay`` s."""
        args: list[Any] = [
            self.group,
            entry_id,
            max(0, math.ceil(delay * 1000)),
            os.urandom(8).hex(),
            self.field,
            body,
            ID_FIELD,
            message_id,
            DELIVERIES_FIELD,
            deliveries,
            GROUP_FIELD,
            self.group,
        ]
        for name, value in state.items():
            args += (name, _encode(value))
        return args

    def schedule(self, args: list[Any], pipe: Any) -> None:
        """Queue on ``pipe``: XACK the entry and keep its copy, atomically. Its result
        is 0 when the entry was not pending (acked already): then nothing was kept."""
        self._schedule(keys=[self.stream, self.key], args=args, client=pipe)

    def move_due(self, now: float) -> float:
        """Move the due copies back to the stream; when (``time.monotonic()``) to look
        again: at once if there may be more, else when the next is due, within
        :data:`MOVE_EVERY` and :data:`MOVE_IDLE`."""
        moved, wait = self.move()
        if moved:
            logger.debug("moved %d due retries back to stream %r", moved, self.stream)
        if moved >= MOVE_LIMIT:
            return now
        return now + max(MOVE_EVERY, MOVE_IDLE if wait is None else min(MOVE_IDLE, wait))

    def report_unkept(self, owed: list[list[Any]], results: list[Any]) -> None:
        """Say which of the schedule scripts ``owed`` (with ``results``) kept no copy:
        their entry was acked already, by another consumer that claimed it."""
        for args, kept in zip(owed, results, strict=False):
            if not kept:
                logger.info(
                    "entry %r of stream %r was acked already (claimed and settled by "
                    "another consumer): not retried later",
                    args[1],
                    self.stream,
                )

    def move(self) -> tuple[int, float | None]:
        """Move up to :data:`MOVE_LIMIT` due copies back to the stream: (how many,
        seconds until the next is due, ``None`` if the set is empty)."""
        moved, wait = self._move(keys=[self.stream, self.key], args=[MOVE_LIMIT, self.group])
        return int(moved), None if int(wait) < 0 else int(wait) / 1000
