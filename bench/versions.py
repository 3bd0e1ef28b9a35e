"""Before and after in one run: a benchmark script under an earlier commit and under this tree.

Exports the earlier commit's ``missive`` package into a temporary directory, then runs
the script alternately with that package first on ``PYTHONPATH`` ("before") and with
this checkout's ("after"), ``--rounds`` times each, interleaved (before, after, after,
before, ...), so that a change of load on the machine hits both alike. Every number
in the script's output is then replaced by its median over the rounds, and the two
tables are printed one above the other with a third, ``after / before``, cell by cell.

    python bench/versions.py --base d567628 [--rounds 3] -- bench/dispatch.py --repeat 3

The script must print tables of the same shape every run (all of ``bench/`` does).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SLOT = "\0"
# A number, with thousands separators ("20,000") read as one.
NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e-?\d+)?")


def export(commit: str, into: Path) -> None:
    """Write ``missive/`` as it was at ``commit`` into ``into``."""
    archive = into / "base.tar"
    subprocess.run(
        ["git", "-C", str(REPO), "archive", "--output", str(archive), commit, "missive"],
        check=True,
    )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")


def run(script: list[str], path: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(path))
    result = subprocess.run(
        [sys.executable, *script], env=env, capture_output=True, text=True, check=False, cwd=REPO
    )
    if result.returncode:
        sys.stderr.write(result.stderr)
        raise SystemExit(f"{' '.join(script)} failed with status {result.returncode}")
    return result.stdout


def medians(outputs: list[str]) -> tuple[list[str], list[list[float]]]:
    """The output with each number replaced by a slot, and each number's values."""
    shapes = [NUMBER.sub(SLOT, text) for text in outputs]
    if len(set(shapes)) != 1:
        raise SystemExit("the script's output changed shape between rounds")
    values = [[float(n.replace(",", "")) for n in NUMBER.findall(text)] for text in outputs]
    return shapes[0].splitlines(), [list(column) for column in zip(*values, strict=True)]


def render(template: list[str], numbers: list[float]) -> str:
    it = iter(numbers)
    lines = []
    for line in template:
        parts = line.split(SLOT)
        filled = [parts[0]]
        for part in parts[1:]:
            filled += [_fmt(next(it)), part]
        lines.append("".join(filled))
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the earlier commit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("script", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    script = [part for part in args.script if part != "--"]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        export(args.base, base)
        before: list[str] = []
        after: list[str] = []
        for round_ in range(args.rounds):
            order = [(before, base), (after, REPO)]
            for outputs, path in order if round_ % 2 == 0 else reversed(order):
                outputs.append(run(script, path))
    template, old = medians(before)
    _, new = medians(after)
    old_values = [statistics.median(column) for column in old]
    new_values = [statistics.median(column) for column in new]
    ratios = [n / o if o else float("nan") for o, n in zip(old_values, new_values, strict=True)]
    print(f"== before ({args.base}), medians of {args.rounds} runs")
    print(render(template, old_values))
    print("== after (this tree)")
    print(render(template, new_values))
    print("== after / before, number by number")
    print(render(template, ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
