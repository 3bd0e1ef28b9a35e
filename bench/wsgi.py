"""HTTP throughput: Missive's WSGIAdapter against a bare WSGI function, both under gunicorn.

Both applications do the same work for each POST of a ~100-byte JSON document:
read the body, decode the JSON, answer 200 with a small JSON document. Missive's
runs it through ``WSGIAdapter`` (a ``JSONMessage``, one matcher, a handler that
calls ``get_json()`` and acks). Both run under the same gunicorn settings on
127.0.0.1; the load comes from a separate process, ``wrk`` (``apt-get install
wrk``) or, with ``--client python`` or when wrk is missing, Python load processes
(install-free, but they saturate sooner). Runs are interleaved (bare, Missive,
bare, Missive...) and the medians and the median ratio printed:
Missive req/s / bare req/s, so 1.0 means no overhead. It also prints the
workers' CPU time per request (from /proc), bare / Missive: on a shared machine,
where other jobs make req/s noisy, this is the steadier measure of the overhead.

    python bench/wsgi.py [--repeat 5] [--duration 5] [--connections 32]
                         [--configs "sync:2:1,gthread:2:4"] [--client wrk|python]

A config is ``worker_class:workers:threads``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = json.dumps(
    {"label": "sign-in", "user": "user-12345", "amount": 42, "ok": True, "at": "2024-01-01"}
).encode()

BARE_APP = """
import json

def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    json.loads(environ["wsgi.input"].read(length).decode("utf-8"))
    body = b'{"status":"acked"}'
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""

MISSIVE_APP = """
import missive
from missive.adapters.wsgi import WSGIAdapter

processor = missive.Processor()

@processor.handle_for(lambda message: True)
def handle(message, ctx):
    message.get_json()
    ctx.ack()

app = WSGIAdapter(missive.JSONMessage, processor)
"""

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
"""

PY_CLIENT = """
import http.client, sys, time
port, seconds, body = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3].encode()
connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
headers = {"Content-Type": "application/json"}
done, bad = 0, 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    connection.request("POST", "/", body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        bad += 1
    done += 1
print(done, bad)
"""


IN_PROCESS = """
import io, json, sys, timeit
sys.path.insert(0, sys.argv[1])
import bare_app, missive_app

environ = {
    "REQUEST_METHOD": "POST", "PATH_INFO": "/", "QUERY_STRING": "", "SCRIPT_NAME": "",
    "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(sys.argv[2])),
    "HTTP_HOST": "127.0.0.1:8000", "HTTP_USER_AGENT": "bench", "HTTP_ACCEPT": "*/*",
    "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "RAW_URI": "/",
    "wsgi.url_scheme": "http", "wsgi.version": (1, 0), "wsgi.errors": sys.stderr,
    "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
}
body = sys.argv[2].encode()

def start_response(status, headers):
    assert status.startswith("200")

def call(app):
    env = dict(environ)
    env["wsgi.input"] = io.BytesIO(body)
    app(env, start_response)

number = 50_000
for name, app in (("bare", bare_app.app), ("missive", missive_app.app)):
    best = min(timeit.repeat(lambda: call(app), number=number, repeat=5)) / number
    print(name, best * 1e6)
"""


def in_process(directory: Path) -> dict[str, float]:
    """µs per request calling each WSGI callable directly: the applications' own cost."""
    result = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, str(directory), PAYLOAD.decode()],
        capture_output=True,
        text=True,
        check=True,
        cwd=directory,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)])),
        },
    )
    return {
        name: float(value)
        for name, value in (line.split() for line in result.stdout.split("\n") if line)
    }


class Server:
    """gunicorn serving ``module:app`` on a loopback socket bound here."""

    def __init__(self, directory: Path, module: str, config: str) -> None:
        worker_class, workers, threads = config.split(":")
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        self.port: int = listener.getsockname()[1]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)])),
        }
        with listener:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "gunicorn", "--bind", f"fd://{listener.fileno()}"),
                    *("--chdir", str(directory), "--worker-class", worker_class),
                    *("--workers", workers, "--threads", threads, "--log-level", "warning"),
                    f"{module}:app",
                ],
                env=env,
                cwd=directory,
                pass_fds=[listener.fileno()],
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError):
                if post_status(self.port) == 200:
                    return
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise SystemExit(f"gunicorn serving {module} did not start")
            time.sleep(0.1)

    def worker_cpu(self) -> float:
        """CPU seconds (user + system) used so far by the workers, from /proc."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                # The fields after the command name, which may hold spaces.
                fields = stat.read_text().rpartition(")")[2].split()
                if int(fields[1]) == self.process.pid:  # a worker: its parent is the master
                    total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def post_status(port: int) -> int:
    """POST the payload once over a raw socket; returns the HTTP status."""
    request = (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(PAYLOAD), PAYLOAD)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        status_line = connection.makefile("rb").readline()
    return int(status_line.split()[1])


def load_wrk(port: int, seconds: float, connections: int, script: Path) -> tuple[float, int]:
    result = subprocess.run(
        [
            *("wrk", "-t", "2", "-c", str(connections), "-d", f"{round(seconds)}s"),
            *("-s", str(script), f"http://127.0.0.1:{port}/"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    if "Non-2xx" in result.stdout or "Socket errors" in result.stdout:
        raise SystemExit(f"wrk saw errors:\n{result.stdout}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    total = re.search(r"(\d+) requests in", result.stdout)
    if rate is None or total is None:
        raise SystemExit(f"unexpected wrk output:\n{result.stdout}")
    return float(rate.group(1)), int(total.group(1))


def load_python(port: int, seconds: float, connections: int, directory: Path) -> tuple[float, int]:
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", PY_CLIENT, str(port), str(seconds), PAYLOAD.decode()],
            stdout=subprocess.PIPE,
            text=True,
            cwd=directory,
        )
        for _ in range(connections)
    ]
    done = 0
    for client in clients:
        out, _ = client.communicate(timeout=seconds + 30)
        count, bad = (int(x) for x in out.split())
        if bad:
            raise SystemExit(f"{bad} requests did not get 200")
        done += count
    return done / seconds, done


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--configs", default="sync:2:1,gthread:2:4")
    parser.add_argument("--client", choices=["wrk", "python"], default=None)
    args = parser.parse_args()
    client = args.client or ("wrk" if shutil.which("wrk") else "python")
    if client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk, or use --client python")
    connections = args.connections if client == "wrk" else min(args.connections, 8)

    print(
        f"client {client}, {connections} connections, {args.duration:g} s per run, "
        f"{args.repeat} interleaved repetitions, {os.cpu_count()} CPUs; medians shown"
    )
    with tempfile.TemporaryDirectory(prefix="missive-bench-http-") as tmp:
        directory = Path(tmp)
        (directory / "bare_app.py").write_text(BARE_APP)
        (directory / "missive_app.py").write_text(MISSIVE_APP)
        script = directory / "post.lua"
        script.write_text(WRK_SCRIPT.format(body=PAYLOAD.decode()))
        cost = in_process(directory)
        print(
            f"in process (no server, best of 5): bare {cost['bare']:.1f} µs, "
            f"missive {cost['missive']:.1f} µs per request"
        )
        print(
            f"{'config':<16}{'bare req/s':>12}{'missive req/s':>15}{'missive/bare':>14}"
            f"{'bare CPU µs':>14}{'missive CPU':>14}{'bare/missive':>13}"
        )
        for config in args.configs.split(","):
            servers = {
                name: Server(directory, f"{name}_app", config) for name in ("bare", "missive")
            }
            try:
                rates, cpus = measure(servers, args, client, connections, directory, script)
            finally:
                for server in servers.values():
                    server.stop()
            pairs = zip(rates["bare"], rates["missive"], strict=True)
            rate_ratio = median([m / b for b, m in pairs])
            cpu_ratio = median([b / m for b, m in zip(cpus["bare"], cpus["missive"], strict=True)])
            print(
                f"{config:<16}{median(rates['bare']):>12.0f}{median(rates['missive']):>15.0f}"
                f"{rate_ratio:>14.3f}{median(cpus['bare']):>14.0f}"
                f"{median(cpus['missive']):>14.0f}{cpu_ratio:>13.3f}"
            )
            for name in servers:
                print(f"{'':<16}{name} req/s: {[round(r) for r in rates[name]]}")
                print(f"{'':<16}{name} CPU µs/req: {[round(c) for c in cpus[name]]}")


def measure(
    servers: dict[str, Server],
    args: argparse.Namespace,
    client: str,
    connections: int,
    directory: Path,
    script: Path,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Interleaved runs (bare, missive, missive, bare, ...): req/s and worker CPU µs/request."""
    rates: dict[str, list[float]] = {name: [] for name in servers}
    cpus: dict[str, list[float]] = {name: [] for name in servers}
    names = list(servers)
    for repetition in range(args.repeat):
        for name in names if repetition % 2 == 0 else reversed(names):
            server = servers[name]
            cpu_before = server.worker_cpu()
            if client == "wrk":
                rate, requests = load_wrk(server.port, args.duration, connections, script)
            else:
                rate, requests = load_python(server.port, args.duration, connections, directory)
            cpus[name].append((server.worker_cpu() - cpu_before) * 1e6 / requests)
            rates[name].append(rate)
    return rates, cpus


if __name__ == "__main__":
    main()
