"""missive._tracing_context: the publisher's context read as the propagator reads it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

from missive._tracing_carrier import CARRIER_GETTER
from missive._tracing_context import ContextReader

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"

HEADERS: list[dict[Any, Any]] = [
    {"traceparent": f"00-{TRACE}-{SPAN}-01"},
    {"traceparent": f"00-{TRACE}-{SPAN}-00"},
    {"traceparent": f"00-{TRACE}-{SPAN}-03"},
    {b"traceparent": f"00-{TRACE}-{SPAN}-01".encode()},
    {"traceparent": f"00-{TRACE}-{SPAN}-01".encode(), "data": b"x"},
    {"traceparent": f"00-{TRACE.upper()}-{SPAN}-01"},
    {"traceparent": f"00-{'0' * 32}-{SPAN}-01"},
    {"traceparent": f"00-{TRACE}-{'0' * 16}-01"},
    {"traceparent": f"ff-{TRACE}-{SPAN}-01"},
    {"traceparent": f"01-{TRACE}-{SPAN}-01-future"},
    {"traceparent": f"00-{TRACE}-{SPAN}-01-extra"},
    {"traceparent": f" 00-{TRACE}-{SPAN}-01"},
    {"traceparent": f"00-{TRACE}-{SPAN}-01\n"},
    {"traceparent": f"00-{TRACE}-{SPAN}-0x"},
    {"traceparent": "00-0x"},
    {"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "vendor=a,other=b"},
    {b"traceparent": f"00-{TRACE}-{SPAN}-01".encode(), b"tracestate": b"vendor=a"},
    {"traceparent": f"00-{TRACE}-{SPAN}-01", "baggage": "user=42"},
    {b"traceparent": f"00-{TRACE}-{SPAN}-01".encode(), b"baggage": b"user=42"},
    {"traceparent": [f"00-{TRACE}-{SPAN}-01"]},
    {"traceparent": 7},
    {"baggage": "user=42"},
    {"other": "value"},
]


def expected(headers: dict[Any, Any]) -> tuple[trace.SpanContext, dict[str, object]] | None:
    """What the global propagator extracts: the valid remote span context, and baggage."""
    context = propagate.extract(headers, getter=CARRIER_GETTER)
    remote = trace.get_current_span(context).get_span_context()
    return (remote, dict(baggage.get_all(context))) if remote.is_valid else None


@pytest.mark.parametrize("headers", HEADERS, ids=range(len(HEADERS)))
def test_the_reader_gives_what_the_default_propagator_extracts(headers: dict[Any, Any]) -> None:
    # Given the API's default propagators (W3C trace context and baggage)
    reader = ContextReader()
    # When the reader reads the headers
    read = reader.read(headers)
    # Then it gives the span context and baggage the propagator extracts, or None
    want = expected(headers)
    if want is None:
        assert read is None
        return
    assert read is not None
    context, remote = read
    assert remote == want[0]
    assert remote.trace_state == want[0].trace_state
    assert trace.get_current_span(context).get_span_context() == remote
    assert dict(baggage.get_all(context)) == want[1]


class _VendorPropagator(TextMapPropagator):
    """Reads a span context from an ``x-vendor-trace`` header: ``<trace>:<span>``."""

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        values = getter.get(carrier, "x-vendor-trace")
        if not values:
            return context or Context()
        trace_id, span_id = values[0].split(":")
        remote = trace.SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True)
        return trace.set_span_in_context(trace.NonRecordingSpan(remote), context)

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        pass

    @property
    def fields(self) -> set[str]:
        return {"x-vendor-trace"}


@pytest.fixture
def vendor_propagator() -> Iterator[None]:
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(_VendorPropagator())
    yield
    propagate.set_global_textmap(before)


def test_another_global_propagator_is_used_once_it_is_set(vendor_propagator: None) -> None:
    # Given a reader that has read with the default propagator, then another one set
    reader = ContextReader()
    # When it reads headers only the other propagator understands, and a traceparent
    vendor = reader.read({"x-vendor-trace": f"{TRACE}:{SPAN}"})
    w3c = reader.read({"traceparent": f"00-{TRACE}-{SPAN}-01"})
    # Then the first gives the vendor's context, and the W3C header is not read
    assert vendor is not None
    assert (vendor[1].trace_id, vendor[1].span_id) == (int(TRACE, 16), int(SPAN, 16))
    assert w3c is None


def test_the_reader_switches_back_to_the_default_propagator() -> None:
    # Given a reader that read with another propagator
    reader = ContextReader()
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(_VendorPropagator())
    try:
        assert reader.read({"traceparent": f"00-{TRACE}-{SPAN}-01"}) is None
    finally:
        propagate.set_global_textmap(before)
    # When the default is back, it reads a traceparent again
    read = reader.read({"traceparent": f"00-{TRACE}-{SPAN}-01"})
    assert read is not None
    assert read[1].span_id == int(SPAN, 16)
