"""The code in docs/mqtt.md runs as printed against Mosquitto, with unique names.

The topic filter, group and client id of the example get this test's random suffix,
so that it never meets another test's messages or session on the shared broker.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from missive.testing.conformance.support import RecordingObserver, running, wait_until
from tests.conformance.mqtt_harness import HOST, PORT, URL, connected, stop
from tests.services import require

DOC = (Path(__file__).resolve().parents[2] / "docs" / "mqtt.md").read_text(encoding="utf-8")
[EXAMPLE] = re.findall(r"```python\n(.*?)```", DOC, flags=re.DOTALL)
[PUBLISH] = re.findall(r"```sh\n(mosquitto_pub.*?)```", DOC, flags=re.DOTALL)


def test_the_example_handles_what_the_mosquitto_pub_line_publishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("mqtt")
    suffix = uuid.uuid4().hex[:12]
    monkeypatch.chdir(tmp_path)  # the example's dlq.db
    monkeypatch.setenv("MQTT_URL", URL)
    unique = {
        "sensors/": f"sensors-{suffix}/",
        '"thermostats"': f'"thermostats-{suffix}"',
        '"thermostat-1"': f'"thermostat-{suffix}"',
    }
    code = EXAMPLE
    for name, replacement in unique.items():
        assert name in code
        code = code.replace(name, replacement)
    # Given the example's adapter, built as printed
    namespace: dict[str, Any] = {"__name__": "docs_mqtt"}
    exec(compile(code, "docs/mqtt.md", "exec"), namespace)  # our own docs
    adapter = namespace["adapter"]
    observer = adapter.add_observer(RecordingObserver())
    try:
        with running(adapter):
            # When the documented mosquitto_pub line publishes a reading
            command = shlex.split(PUBLISH.replace("\\\n", " "))
            command[command.index("-t") + 1] = f"sensors-{suffix}/kitchen/temperature"
            subprocess.run([*command, "-h", HOST, "-p", str(PORT)], check=True, timeout=30)
            wait_until(lambda: namespace["readings"] == [21.5], "the reading is recorded")
    finally:
        namespace["processor"].dlq.close()
        stop(connected(adapter.client_id, clean_start=True))  # the session goes
    # Then the handler recorded it, with the publisher's id from the user property
    assert observer.message_ids() == [b"reading-42"]
    assert adapter.client_id == f"thermostat-{suffix}"
