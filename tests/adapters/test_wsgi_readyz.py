"""The WSGI adapter's readiness probe, ``/readyz``: ready while it serves, not once a stop
is requested; ``/healthz`` keeps its meaning."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import missive
from missive.adapters.wsgi import WSGIAdapter
from tests.adapters.test_wsgi import Recorder, adapter_for, call


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def adapter(recorder: Recorder) -> Iterator[WSGIAdapter[missive.Message]]:
    adapter = adapter_for(recorder)
    yield adapter
    adapter.close()


def test_readyz_answers_200_while_serving(adapter: WSGIAdapter[Any]) -> None:
    response = call(adapter, method="GET", path="/readyz")

    assert response.status == 200
    assert response.body == b'{"status":"ok"}'


def test_readyz_runs_the_processing_hooks_as_healthz_does(recorder: Recorder) -> None:
    adapter = adapter_for(recorder)

    call(adapter, method="GET", path="/readyz")

    assert recorder.events == ["before"]
    adapter.close()


def test_readyz_answers_503_once_a_stop_is_requested_and_healthz_still_200(
    adapter: WSGIAdapter[Any],
) -> None:
    call(adapter, method="GET", path="/readyz")

    adapter.stop()  # what SIGTERM does under run(): the drain starts

    response = call(adapter, method="GET", path="/readyz")
    assert response.status == 503
    assert response.body == b'{"status":"stopping"}'
    assert call(adapter, method="GET", path="/healthz").status == 200


def test_readyz_answers_503_once_closed(adapter: WSGIAdapter[Any]) -> None:
    adapter.close()

    assert call(adapter, method="GET", path="/readyz").status == 503


def test_readyz_head_has_no_body_and_post_is_refused(
    adapter: WSGIAdapter[Any], recorder: Recorder
) -> None:
    head = call(adapter, method="HEAD", path="/readyz")
    post = call(adapter, path="/readyz", body=b"x")

    assert (head.status, head.body) == (200, b"")
    assert post.status == 405
    assert recorder.messages == []


def test_ready_path_is_configurable_or_off(recorder: Recorder) -> None:
    moved = adapter_for(recorder, ready_path="/ready")
    off = adapter_for(recorder, ready_path=None)

    assert call(moved, method="GET", path="/ready").status == 200
    assert call(moved, method="GET", path="/readyz").status == 404
    assert call(off, method="GET", path="/readyz").status == 404
    moved.close()
    off.close()


@pytest.mark.parametrize(
    "options",
    [{"ready_path": "readyz"}, {"ready_path": "/"}, {"ready_path": "/healthz"}],
)
def test_invalid_ready_paths_raise_value_error(recorder: Recorder, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        adapter_for(recorder, **options)


def test_readyz_over_the_development_server() -> None:
    adapter = WSGIAdapter(missive.RawMessage, missive.Processor())
    thread = threading.Thread(target=adapter.run, kwargs={"port": 0}, daemon=True)
    thread.start()
    try:
        assert adapter.wait_ready(10)
        connection = http.client.HTTPConnection(*adapter.server_address, timeout=5)
        connection.request("GET", "/readyz")
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b'{"status":"ok"}')
        connection.close()
    finally:
        adapter.stop()
        thread.join(10)
