"""The request side of the WSGI adapter: a bounded body, headers, and the message they make."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from missive._typing import M
from missive.adapters._wsgi_deadline import watch

if TYPE_CHECKING:
    from missive.adapters.wsgi import WSGIAdapter

__all__ = [
    "MAX_ID_LENGTH",
    "RejectedError",
    "decimal",
    "read_body",
    "request_headers",
    "request_message",
]

#: The longest message id taken from a sender's header, in characters.
MAX_ID_LENGTH = 256
_CHUNK = 64 * 1024
_MAX_LENGTH_DIGITS = 18  # far above any limit, far below int()'s bound


def decimal(text: str, max_digits: int) -> int | None:
    """``text`` as a non-negative integer of at most ``max_digits`` ASCII digits, else ``None``.

    ``str.isdigit`` also accepts digits ``int`` refuses (``"\u00b2"``), and ``int``
    refuses more than 4,300 digits: header values are checked here, never by those.
    """
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


class RejectedError(Exception):
    """A request refused before it became a message; ``reason`` is for the log only."""

    def __init__(
        self,
        status: int,
        document: dict[str, Any],
        reason: str,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.document = document
        self.reason = reason
        self.headers = list(headers)


def request_message(adapter: WSGIAdapter[M], environ: Mapping[str, Any], path: str) -> M:
    """The message a POST to ``path`` carries, read and checked with ``adapter``'s settings.

    :raises RejectedError: for a body refused by :func:`read_body`, a failed
        signature (401) or a sender's message id over :data:`MAX_ID_LENGTH` (400).
    """
    body = read_body(environ, adapter.max_body_size, adapter.body_timeout)
    headers = request_headers(environ)
    signature = adapter.signature
    if signature is not None:
        problem = signature.verify(body, headers)
        if problem is not None:
            document = {"status": "rejected", "error": "invalid or missing signature"}
            raise RejectedError(401, document, problem)
    message_id: bytes | None = None
    id_header = adapter.message_id_header
    if id_header is not None:
        value = headers.get(id_header, "").strip()
        if len(value) > MAX_ID_LENGTH:
            raise RejectedError(
                400,
                {"status": "rejected", "error": f"message id longer than {MAX_ID_LENGTH}"},
                f"{id_header} header of {len(value)} characters",
            )
        if value:
            message_id = value.encode("latin-1")
    drop = adapter.drop_headers
    if drop.intersection(headers):
        headers = {k: v for k, v in headers.items() if k not in drop}
    attributes = {
        "method": "POST",
        "path": path,
        "query_string": environ.get("QUERY_STRING", ""),
        "remote_addr": environ.get("REMOTE_ADDR"),
        "headers": headers,
    }
    return adapter.message_cls(body, message_id, attributes)


# environ key -> header name, bounded so that senders inventing header names
# cannot grow it without limit.
_names: dict[str, str] = {}
_MAX_NAMES = 2048


def _header_name(key: str) -> str:
    name = key[5:].replace("_", "-").lower()
    if len(_names) < _MAX_NAMES:
        _names[key] = name
    return name


def request_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """The request's headers from a WSGI environ, names lower-case with dashes."""
    cached = _names.get
    headers = {
        (cached(key) or _header_name(key)): value
        for key, value in environ.items()
        if key[:5] == "HTTP_"
    }
    content_type = environ.get("CONTENT_TYPE")
    if content_type:
        headers["content-type"] = content_type
    content_length = environ.get("CONTENT_LENGTH")
    if content_length:
        headers["content-length"] = content_length
    return headers


def _too_large(size: str, limit: int) -> RejectedError:
    return RejectedError(
        413,
        {"status": "rejected", "error": "body too large", "limit": limit},
        f"body of {size} bytes exceeds the limit of {limit} bytes",
    )


def read_body(environ: Mapping[str, Any], limit: int, timeout: float | None = None) -> bytes:
    """Read the request body, at most ``limit`` bytes, without reading a larger one whole.

    With a ``Content-Length`` the length is checked first. Without one, a chunked
    body (or one the server says ends, ``wsgi.input_terminated``) is read up to
    ``limit + 1`` bytes. Any other request has no defined length (an HTTP/1.0 body
    runs to the end of the connection, which servers do not pass on): it is refused
    with 411 rather than taken as empty.

    ``timeout`` bounds reading the whole body where the server exposes the client's
    socket (gunicorn's ``gunicorn.socket``): each ``recv`` times out after it, and a
    watchdog cuts the read off once it has lasted that long in all (a client sending
    a byte a second gets no further). Such a read, or one that raises
    :class:`TimeoutError` under any server, is answered 408.

    :raises RejectedError: 413 for a body over ``limit``, 400 for a bad or short
        length, 411 for a body of unknown length, 408 for a client too slow.
    """
    sock = environ.get("gunicorn.socket")
    if timeout is None or sock is None:
        return _read_body(environ, limit)
    previous = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        with watch(sock, timeout) as deadline:
            try:
                return _read_body(environ, limit)
            except RejectedError as exc:
                if deadline.expired:  # the body looked short because it was cut off
                    raise _too_slow() from exc
                raise
    finally:
        sock.settimeout(previous)


def _too_slow() -> RejectedError:
    return RejectedError(
        408,
        {"status": "rejected", "error": "the body arrived too slowly; send it again"},
        "reading the body timed out: the client sent too slowly or stopped",
    )


def _read_body(environ: Mapping[str, Any], limit: int) -> bytes:
    stream = environ["wsgi.input"]
    length_text = environ.get("CONTENT_LENGTH")
    if length_text:
        length = decimal(length_text, _MAX_LENGTH_DIGITS)
        if length is None:
            raise RejectedError(
                400,
                {"status": "rejected", "error": "invalid Content-Length"},
                "invalid Content-Length header",
            )
        if length > limit:
            raise _too_large(length_text, limit)
        body = _read(stream, length)
        if len(body) < length:
            raise RejectedError(
                400,
                {"status": "rejected", "error": "incomplete body"},
                f"body ended after {len(body)} of {length} bytes",
            )
        return body
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if not (chunked or environ.get("wsgi.input_terminated")):
        raise RejectedError(
            411,
            {"status": "rejected", "error": "Content-Length or chunked encoding required"},
            "no Content-Length and not chunked: the body's length is unknown",
        )
    body = _read(stream, limit + 1)
    if len(body) > limit:
        raise _too_large(f"more than {limit}", limit)
    return body


def _read(stream: Any, size: int) -> bytes:
    """Read up to ``size`` bytes, fewer only at the end of the body."""
    if size == 0:
        return b""
    try:
        data: bytes = stream.read(size)
        if len(data) == size or not data:
            return data
        parts = [data]
        got = len(data)
        while got < size:
            data = stream.read(min(size - got, _CHUNK))
            if not data:
                break
            parts.append(data)
            got += len(data)
        return b"".join(parts)
    except TimeoutError as exc:
        raise _too_slow() from exc
    except Exception as exc:  # servers raise their own types for a broken body
        raise RejectedError(
            400,
            {"status": "rejected", "error": "could not read the body"},
            f"reading the body failed: {type(exc).__name__}",
        ) from exc
