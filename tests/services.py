"""Probes for the real services that some tests need.

On a machine without the service the test skips with a message saying how to start
it; when ``CI=true`` it fails instead, so that CI never passes by skipping.
"""

from __future__ import annotations

import importlib.util
import os
import socket

import pytest

START = {
    "redis": 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
    "rabbitmq": "rabbitmq-server -detached && rabbitmqctl await_startup",
    "postgres": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "nats": "nats-server -a 127.0.0.1 -p 4222 -js",
    "mqtt": "mosquitto -d -c /etc/mosquitto/mosquitto.conf",
}
PORTS = {"redis": 6379, "rabbitmq": 5672, "postgres": 5432, "nats": 4222, "mqtt": 1883}


def require(service: str, host: str = "127.0.0.1", port: int | None = None) -> None:
    """Skip (locally) or fail (CI=true) the calling test unless ``service`` answers."""
    port = PORTS[service] if port is None else port
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        problem = (
            f"{service} is not reachable at {host}:{port} ({exc}); "
            f"start it with: {START[service]}  (or run `make services`)"
        )
    if os.environ.get("CI") == "true":
        pytest.fail(problem)
    pytest.skip(problem)


#: The browser the real-browser tests drive (Debian's ``chromium`` package).
CHROMIUM = "/usr/bin/chromium"


def require_browser() -> None:
    """Skip (locally) or fail (CI=true) the calling test unless Playwright for Python
    and Chromium at :data:`CHROMIUM` are both installed."""
    problems = []
    if importlib.util.find_spec("playwright") is None:
        problems.append("Playwright is not installed: pip install playwright")
    if not os.access(CHROMIUM, os.X_OK):
        problems.append(
            f"{CHROMIUM} is missing: apt-get install -y chromium "
            "(never `playwright install`: the tests drive Debian's Chromium)"
        )
    if not problems:
        return
    problem = "; ".join(problems)
    if os.environ.get("CI") == "true":
        pytest.fail(problem)
    pytest.skip(problem)
