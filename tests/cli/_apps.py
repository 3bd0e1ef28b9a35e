"""Programs that the CLI tests write into their directory and point the command at."""

from __future__ import annotations

from pathlib import Path

#: A processor whose ``orders`` handler raises until a file named ``fixed`` exists
#: next to it; ``later`` nacks; hooks and handled messages are logged to files.
SHOP = '''
import os
from pathlib import Path

import missive
from missive.adapters.stdin import StdinAdapter
from missive.dlq.sqlite import SQLiteDLQ

HERE = Path(__file__).parent
processor: missive.Processor[missive.JSONMessage] = missive.Processor()


def _log(name, text):
    with open(HERE / name, "a") as log:
        log.write(text + "\\n")


@processor.handle_for(lambda m: m.get_json().get("kind") == "order")
def orders(message, ctx):
    if not (HERE / "fixed").exists():
        raise RuntimeError("orders are broken")
    _log("handled.log", str(message.get_json()["n"]))
    ctx.ack()


@processor.handle_for(lambda m: m.get_json().get("kind") == "later")
def later(message, ctx):
    ctx.nack()


@processor.handle_for(lambda m: m.get_json().get("kind") in ("refund", "any"))
def refunds(message, ctx):
    ctx.ack()


@processor.handle_for(lambda m: m.get_json().get("kind") == "any")
def anything(message, ctx):
    ctx.ack()


@processor.before_processing
def started(ctx):
    _log("hooks.log", f"before {os.getpid()}")


@processor.after_processing
def stopped(ctx):
    _log("hooks.log", f"after {os.getpid()}")


def adapter():
    """A stdin adapter whose dead letters go to dlq.db."""
    processor.set_dlq(SQLiteDLQ(HERE / "dlq.db"))
    return StdinAdapter(missive.JSONMessage, processor)
'''

#: The quickstart's first example, as printed in the specification.
HELLO = """
import missive
from missive.adapters.stdin import StdinAdapter

processor = missive.Processor()

@processor.handle_for(lambda m: m.raw_data == b"Hello")
def greet(message, ctx):
    print("Hello whoever you are")
    ctx.ack()

stdin_processor = StdinAdapter(missive.RawMessage, processor)

if __name__ == "__main__":
    stdin_processor.run()
"""

#: An adapter serving files dropped in ``inbox/``, one message a file: several
#: processes may serve one directory, each claiming a file by renaming it. Hooks
#: write ``started/PID`` and ``stopped/PID``; the handler writes ``done/NAME``.
DIRECTORY_QUEUE = """
import os
import time
from pathlib import Path

import missive
from missive.adapters.base import Adapter

HERE = Path(__file__).parent
processor = missive.Processor()


class DirectoryAdapter(Adapter):
    def __init__(self, message_cls, processor, directory):
        super().__init__(message_cls, processor)
        self.directory = Path(directory)

    def run(self):
        claimed = self.directory / f".claimed-{os.getpid()}"
        with self.stop_on_signals(), self.processor.context() as ctx:
            self._set_ready()
            while not self.stop_requested:
                for path in sorted(self.directory.glob("*.msg")):
                    try:
                        path.rename(claimed)
                    except FileNotFoundError:
                        continue
                    message = self.message_cls(claimed.read_bytes(), path.stem.encode())
                    ctx.process(message)
                    claimed.unlink()
                time.sleep(0.02)


@processor.handle_for(lambda m: True)
def record(message, ctx):
    (HERE / "done" / message.message_id.decode()).write_text(str(os.getpid()))
    ctx.ack()


@processor.before_processing
def started(ctx):
    (HERE / "started" / str(os.getpid())).touch()


@processor.after_processing
def stopped(ctx):
    (HERE / "stopped" / str(os.getpid())).touch()


def adapter():
    for name in ("inbox", "done", "started", "stopped"):
        (HERE / name).mkdir(exist_ok=True)
    return DirectoryAdapter(missive.RawMessage, processor, HERE / "inbox")
"""


def write_app(directory: Path, name: str, source: str) -> Path:
    """Write ``source`` as the module ``name`` in ``directory``."""
    path = directory / f"{name}.py"
    path.write_text(source)
    return path
