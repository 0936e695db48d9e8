"""`reconciler --help` start-up time, with the interpreter's own start-up for scale."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import reconciler_command, rounded, say, summary


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True, timeout=60)
    return time.perf_counter() - started


def import_profile(top: int = 8) -> list[dict[str, Any]]:
    """The slowest imports of `reconciler.cli` (cumulative µs), from `python -X importtime`."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import reconciler.cli"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    rows: list[dict[str, Any]] = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match:
            rows.append(
                {
                    "module": match.group(4),
                    "self_us": int(match.group(1)),
                    "cumulative_us": int(match.group(2)),
                    "depth": len(match.group(3)) // 2,
                }
            )
    top_level = [row for row in rows if row["depth"] <= 1]
    return sorted(top_level, key=lambda row: row["cumulative_us"], reverse=True)[:top]


def run_startup(runs: int) -> dict[str, Any]:
    say(f"start-up: `reconciler --help`, {runs} runs")
    help_command = [*reconciler_command(), "--help"]
    bare_command = [sys.executable, "-c", "pass"]
    # Warm the page cache and the bytecode caches first: the target is about a warm start.
    _timed(help_command)
    _timed(bare_command)
    helps, bares = [], []
    for _ in range(runs):
        helps.append(_timed(help_command))
        bares.append(_timed(bare_command))
    return {
        "command": " ".join(help_command),
        "help": summary(helps),
        "python_bare": summary(bares),
        "help_minus_bare_python_s": rounded(
            summary(helps)["median_s"] - summary(bares)["median_s"]
        ),
        "slowest_imports": import_profile(),
    }
