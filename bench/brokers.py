"""Brokers side by side: Missive's adapters against the raw clients and FastStream.

Runs ``bench/brokers_rabbitmq.py`` (RabbitMQ: raw pika, Missive, FastStream) and
``bench/brokers_redis.py`` (Redis Streams and Pub/Sub: raw redis-py, Missive,
FastStream, and the 200,000-message Pub/Sub burst) in turn, with the same number
of messages and repetitions. Each prints its own table of medians and ratios to
the raw client; see bench/README.md for the latest figures.

    python bench/brokers.py [--messages 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", default="20000")
    parser.add_argument("--repeat", default="5")
    args = parser.parse_args()
    common = ["--messages", args.messages, "--repeat", args.repeat]
    for script in ("brokers_rabbitmq.py", "brokers_redis.py"):
        print(f"== {script}", flush=True)
        result = subprocess.run([sys.executable, str(HERE / script), *common], check=False)
        if result.returncode != 0:
            return result.returncode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
