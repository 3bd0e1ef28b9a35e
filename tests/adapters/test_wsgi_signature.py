"""The header parsers of the webhook signature schemes, fed crafted and random input.

A verifier answers ``None`` (authentic) or a reason string (401); any exception
would become a 500, which tells the sender to retry a forgery.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from missive.adapters.wsgi import HMACSignature, StripeSignature

SECRET = b"s3cret"
NOW = 1_700_000_000
CLOCK = float(NOW)  # time.time() is a float: a huge int overflows against it

stripe = StripeSignature(SECRET, clock=lambda: CLOCK)
verifiers = [
    HMACSignature(SECRET),
    HMACSignature(SECRET, header="X-Shopify-Hmac-Sha256", prefix="", encoding="base64"),
    stripe,
]

# Header values as a WSGI server passes them: any latin-1 text, plus digits of
# other scripts and the pieces of each scheme, so that the parsers' branches are hit.
pieces = st.sampled_from(["t=", "v1=", "sha256=", ",", "=", " ", "\u00b2", "\u0663", "0", "9"])
header_values = st.lists(st.one_of(pieces, st.text(max_size=20)), max_size=30).map("".join)


@pytest.mark.parametrize(
    "value",
    ["t=" + "9" * 5000, "t=\u00b2", "t=" + "9" * 400, "t=-1", "t=1e9", "t=\u0663"],
    ids=["5000 digits", "superscript two", "400 digits", "negative", "exponent", "arabic 3"],
)
def test_malformed_stripe_timestamp_is_a_reason_not_an_exception(value: str) -> None:
    reason = stripe.verify(b"{}", {"stripe-signature": f"{value},v1={'0' * 64}"})
    assert isinstance(reason, str)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=64), value=header_values)
def test_any_header_value_gets_none_or_a_reason(body: bytes, value: str) -> None:
    for verifier in verifiers:
        reason = verifier.verify(body, {verifier.header: value})
        assert reason is None or isinstance(reason, str)


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=64), extra=header_values)
def test_a_valid_stripe_signature_with_junk_after_it_still_passes(
    body: bytes, extra: str
) -> None:
    value = stripe.sign(body, NOW) + "," + extra.replace("t=", "x=")
    assert stripe.verify(body, {stripe.header: value}) is None
