"""Message types: the bytes an adapter received, an id, and the transport's attributes."""

from __future__ import annotations

import itertools
import json
import os
import sys
import weakref
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from missive.errors import MessageDecodeError

__all__ = ["JSONMessage", "Message", "RawMessage", "message_class_named"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class _Undecoded:
    """The value of ``Message._decoded`` before decoding, or after decoding failed.

    ``problem`` is empty until a decode failed, then the failure's stable text;
    ``detail`` is where it failed, when known.
    """

    __slots__ = ("detail", "problem")

    def __init__(self, problem: str = "", detail: str | None = None) -> None:
        self.problem = problem
        self.detail = detail


_UNDECODED = _Undecoded()


class _NonJSONConstantError(Exception):
    """Raised while decoding for ``NaN``, ``Infinity`` or ``-Infinity``."""


def _reject_constant(name: str) -> None:
    raise _NonJSONConstantError(name)


# Python's json accepts NaN and Infinity, which JSON does not; a decoder made once
# costs nothing per message (json.loads with an option builds one per call).
_decode_json = json.JSONDecoder(parse_constant=_reject_constant).decode

_counter = itertools.count(1)
_prefix = b""


def _new_prefix() -> None:
    # Ids are a random per-process prefix and a counter: unique across processes,
    # much cheaper than uuid4. A forked child must not reuse its parent's prefix.
    global _counter, _prefix
    _prefix = os.urandom(8).hex().encode("ascii") + b"-"
    _counter = itertools.count(1)


_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)

# Weak, so that classes a program drops (test-local ones, say) are not kept alive.
_registry: weakref.WeakValueDictionary[str, type[Message]] = weakref.WeakValueDictionary()


def message_class_named(name: str) -> type[Message] | None:
    """Return the already-imported :class:`Message` subclass called ``name``, if any.

    ``name`` is ``"module.QualName"`` as in :attr:`Message.class_name`. Nothing is ever
    imported: only classes that the running program has defined can be found, so a
    stored class name cannot make Missive run code it was not already running.
    """
    return _registry.get(name)


class Message:
    """A message: its bytes, its id and the transport's attributes.

    Subclass it for a custom format and add methods that read ``raw_data``; keep the
    constructor's signature so that adapters and DLQs can build your messages. A
    subclass may cache what it decodes in its own attributes.

    :param raw_data: the message's bytes, exactly as the transport delivered them.
    :param message_id: the transport's own id, so that a redelivered message keeps its
        id; when ``None`` a unique id is generated.
    :param attributes: what the transport says about the message (channel, queue,
        routing key, headers, delivery count...); read-only once the message exists.
    :raises TypeError: if ``raw_data`` is not bytes-like or ``message_id`` not bytes.
    """

    __slots__ = ("_decoded", "_id", "attributes", "raw_data")

    raw_data: bytes
    #: A read-only mapping of what the transport knows about the message.
    attributes: Mapping[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _registry[f"{cls.__module__}.{cls.__qualname__}"] = cls

    def __init__(
        self,
        raw_data: bytes,
        message_id: bytes | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        if type(raw_data) is not bytes:
            if not isinstance(raw_data, bytes | bytearray | memoryview):
                raise TypeError(f"raw_data must be bytes, not {type(raw_data).__name__}")
            raw_data = bytes(raw_data)
        if message_id is not None and type(message_id) is not bytes:
            raise TypeError(f"message_id must be bytes, not {type(message_id).__name__}")
        self.raw_data = raw_data
        self._id = message_id
        # The decoded form, for subclasses that decode (JSONMessage): set here so that
        # their first access costs no AttributeError.
        self._decoded: Any = _UNDECODED
        self.attributes = _EMPTY if not attributes else MappingProxyType(dict(attributes))

    @property
    def message_id(self) -> bytes:
        """The message's unique id (generated on first use when the transport gave none)."""
        message_id = self._id
        if message_id is None:
            message_id = self._id = _prefix + b"%d" % next(_counter)
        return message_id

    @property
    def class_name(self) -> str:
        """``"module.QualName"`` of the message's class, as DLQs store it."""
        cls = type(self)
        return f"{cls.__module__}.{cls.__qualname__}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.message_id == other.message_id

    def __hash__(self) -> int:
        return hash(self.message_id)

    def __repr__(self) -> str:
        # Never the payload: it may hold customer data.
        return f"<{type(self).__name__} id={self.message_id!r} size={len(self.raw_data)}>"


_registry["missive.message.Message"] = Message


class RawMessage(Message):
    """A message whose content is just its bytes, ``raw_data``."""

    __slots__ = ()


class JSONMessage(Message):
    """A message whose bytes are a UTF-8 JSON document, decoded by :meth:`get_json`."""

    __slots__ = ()

    def get_json(self) -> Any:
        """Return the decoded JSON document, decoding it on first use only.

        Strict JSON only: ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON, and
        an integer longer than Python converts (``sys.get_int_max_str_digits()``)
        cannot be decoded; both are decode errors.

        :raises MessageDecodeError: (a ``ValueError``) if the bytes are not UTF-8 or
            not JSON; it names the id and the problem, never the payload. The
            problem is the same for every message that fails the same way; where in
            the bytes it failed is the error's ``detail``.
        """
        value = self._decoded
        if value.__class__ is _Undecoded:
            if not value.problem:
                try:
                    value = self._decoded = _decode_json(self.raw_data.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    value = _Undecoded(f"invalid UTF-8: {exc.reason}", f"at byte {exc.start}")
                except json.JSONDecodeError as exc:
                    # Some of json's texts end in "at", for the position it appended.
                    value = _Undecoded(
                        f"invalid JSON: {exc.msg.removesuffix(' at')}",
                        f"at line {exc.lineno} column {exc.colno}",
                    )
                except _NonJSONConstantError as exc:
                    value = _Undecoded(f"invalid JSON: {exc} is not a JSON number")
                except RecursionError:
                    value = _Undecoded("invalid JSON: nested too deeply to decode")
                except ValueError:  # the one other: int() refusing too many digits
                    value = _Undecoded(
                        "invalid JSON: an integer has more digits than Python converts",
                        f"(more than {sys.get_int_max_str_digits()}, the limit that "
                        "sys.set_int_max_str_digits() sets)",
                    )
                else:
                    return value
                self._decoded = value
            raise MessageDecodeError(self.message_id, value.problem, value.detail)
        return value
