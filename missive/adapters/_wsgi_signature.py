"""Webhook signature verifiers for the WSGI adapter: an HMAC of the body, shared secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from missive.adapters._wsgi_request import decimal

__all__ = ["HMACSignature", "SignatureVerifier", "StripeSignature"]


class SignatureVerifier(Protocol):
    """Says whether a request's body was signed by a sender that knows the secret.

    The adapter calls :meth:`verify` after reading the body and before building a
    message; a request that fails gets 401 and is not processed. Implementations
    must be thread-safe (requests arrive on several threads) and must compare
    digests in constant time (:func:`hmac.compare_digest`).
    """

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        """Return ``None`` if the body is authentic, else a short reason for the log.

        :param body: the request body, exactly as received.
        :param headers: the request headers, names lower-case (``"x-hub-signature-256"``).

        The reason must never quote the body or the secret.
        """
        ...


def _key(secret: bytes | str) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("a webhook signature secret must not be empty")
    return key


class HMACSignature:
    """An HMAC of the whole body in one header, GitHub's scheme by default.

    The default checks ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``.
    Other senders differ only in header, prefix, digest or encoding; Shopify, for
    example, is ``HMACSignature(secret, header="X-Shopify-Hmac-Sha256", prefix="",
    encoding="base64")``.

    :param secret: the shared secret (a ``str`` is encoded as UTF-8); not empty.
    :param header: the header holding the signature (any case).
    :param prefix: text before the digest in the header value (``"sha256="``).
    :param digest: a :mod:`hashlib` algorithm name.
    :param encoding: ``"hex"`` or ``"base64"``, how the digest is written.
    :raises ValueError: for an empty secret, an unknown digest or encoding.
    """

    def __init__(
        self,
        secret: bytes | str,
        *,
        header: str = "X-Hub-Signature-256",
        prefix: str = "sha256=",
        digest: str = "sha256",
        encoding: str = "hex",
    ) -> None:
        if encoding not in ("hex", "base64"):
            raise ValueError(f"encoding must be 'hex' or 'base64', not {encoding!r}")
        hashlib.new(digest)  # raises ValueError for an unknown algorithm
        self._key = _key(secret)
        self.header = header.lower()
        self.prefix = prefix
        self.digest = digest
        self.encoding = encoding

    def expected(self, body: bytes) -> str:
        """The header value a sender that knows the secret sends for ``body``."""
        mac = hmac.new(self._key, body, self.digest).digest()
        text = mac.hex() if self.encoding == "hex" else base64.b64encode(mac).decode("ascii")
        return self.prefix + text

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        """See :meth:`SignatureVerifier.verify`."""
        given = headers.get(self.header)
        if given is None:
            return f"no {self.header} header"
        expected = self.expected(body)
        if self.encoding == "hex":
            given = given.strip().lower()
        if not hmac.compare_digest(given.encode("latin-1", "replace"), expected.encode("ascii")):
            return f"wrong signature in {self.header}"
        return None

    def __repr__(self) -> str:
        return f"HMACSignature(header={self.header!r}, digest={self.digest!r})"


# Unix time has 10 digits until the year 2286; a longer t= is not a timestamp.
_MAX_TIMESTAMP_DIGITS = 12


class StripeSignature:
    """Stripe's timestamped scheme: ``Stripe-Signature: t=<unix time>,v1=<hex>[,v1=...]``.

    Each ``v1`` is the hex HMAC-SHA256 of ``b"<t>." + body``; one must match. The
    timestamp must be within ``tolerance`` seconds of now, in either direction,
    which limits replays of a captured request.

    :param secret: the endpoint's signing secret (``whsec_...``), used as given.
    :param header: the header holding the signature.
    :param tolerance: the largest accepted age (or clock skew) in seconds.
    :param clock: returns the current Unix time; for tests.
    :raises ValueError: for an empty secret or a negative tolerance.
    """

    def __init__(
        self,
        secret: bytes | str,
        *,
        header: str = "Stripe-Signature",
        tolerance: float = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if tolerance < 0:
            raise ValueError(f"tolerance must be at least 0 seconds, not {tolerance}")
        self._key = _key(secret)
        self.header = header.lower()
        self.tolerance = tolerance
        self.clock = clock

    def sign(self, body: bytes, timestamp: int) -> str:
        """The header value a sender that knows the secret sends for ``body`` at ``timestamp``."""
        mac = hmac.new(self._key, b"%d." % timestamp + body, hashlib.sha256).hexdigest()
        return f"t={timestamp},v1={mac}"

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        """See :meth:`SignatureVerifier.verify`."""
        value = headers.get(self.header)
        if value is None:
            return f"no {self.header} header"
        timestamp: int | None = None
        signatures: list[bytes] = []
        for item in value.split(","):
            key, _, text = item.strip().partition("=")
            if key == "t":
                timestamp = decimal(text, _MAX_TIMESTAMP_DIGITS)
            elif key == "v1":
                signatures.append(text.strip().lower().encode("latin-1", "replace"))
        if timestamp is None or not signatures:
            return f"{self.header} header lacks t= or v1="
        if abs(self.clock() - timestamp) > self.tolerance:
            return f"{self.header} timestamp is more than {self.tolerance:g}s from now"
        expected = hmac.new(self._key, b"%d." % timestamp + body, hashlib.sha256)
        want = expected.hexdigest().encode("ascii")
        # Compare against every v1 (no early exit), so timing says nothing of which.
        matched = False
        for signature in signatures:
            matched |= hmac.compare_digest(signature, want)
        return None if matched else f"wrong signature in {self.header}"

    def __repr__(self) -> str:
        return f"StripeSignature(header={self.header!r}, tolerance={self.tolerance:g})"
