"""Whole processes, as CI and pre-commit run them: start-up included.

* `reconciler plan FILE --detailed-exitcode`, no-op, N built-in mounts, next to a
  Python process that sends the same reads with urllib and nothing else;
* `reconciler validate FILE` of an N-mount file, next to a process that only imports
  its dependencies (`python -c "import pydantic, ruamel.yaml"`).

The two commands of a pair run alternately, so both see the same load; the ratio of
the medians is the figure (the absolute times vary with the machine's load).
The imports of the plan command are profiled with `python -X importtime`. Every
process of a pair runs with its bytecode cached, as after an install.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import python_env, reconciler_command, rounded, say, summary
from benchmarks.noop_plan import Population, populate, server_env, write_export
from reconciler.demo.devserver import DevServer

# The same reads as `read_live_state`, by the simplest means: urllib, one connection
# per request, answers decoded. External catalog entries are read one by one, and a
# mount whose plugin is an external entry is probed, as the live-state read does.
URLLIB_FLOOR = """\
import json, os, urllib.request
base = os.environ["BAO_ADDR"] + "/v1/"
headers = {"X-Vault-Token": os.environ["BAO_TOKEN"]}
def get(path):
    with urllib.request.urlopen(urllib.request.Request(base + path, headers=headers)) as r:
        return json.load(r)
catalog = get("sys/plugins/catalog")["data"]["detailed"]
external = [e for e in catalog if not e.get("builtin")]
for e in external:
    get(f"sys/plugins/catalog/{e['type']}/{e['name']}?version={e.get('version', '')}")
tables = {"": get("sys/mounts")["data"], "auth/": get("sys/auth")["data"]}
get("sys/seal-status")
names = {e["name"] for e in external}
for prefix, table in tables.items():
    for path, mount in table.items():
        if mount["type"] in names:
            get(prefix + path.rstrip("/") + "?help=1")
"""

DEPENDENCIES_ONLY = "import pydantic, ruamel.yaml"
BASE_MODEL_TOO = "from pydantic import BaseModel; import ruamel.yaml"


def _timed(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, env=env, timeout=120
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    return elapsed


def side_by_side(
    first: list[str], second: list[str], runs: int, env: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Both commands `runs` times, alternately, after one warm-up run each."""
    _timed(first, env)
    _timed(second, env)
    ones, twos = [], []
    for _ in range(runs):
        ones.append(_timed(first, env))
        twos.append(_timed(second, env))
    a, b = summary(ones), summary(twos)
    return a, b, rounded(a["median_s"] / b["median_s"], 2)


def import_profile(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Milliseconds of imports by top-level package (reconciler by module), best of 3."""
    best: dict[str, int] = {}
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", *command],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        spent: collections.Counter[str] = collections.Counter()
        for line in done.stderr.splitlines():
            parts = line.split("|")
            if len(parts) < 3 or not parts[0].startswith("import time:"):
                continue
            if not parts[0].split(":")[1].strip().isdigit():
                continue
            name = parts[2].strip()
            depth = 2 if name.startswith("reconciler.") else 1
            spent[".".join(name.split(".")[:depth])] += int(parts[0].split(":")[1])
        for package, microseconds in spent.items():
            best[package] = min(best.get(package, microseconds), microseconds)
    ranked = sorted(best.items(), key=lambda item: -item[1])
    return {
        "total_ms": round(sum(best.values()) / 1000),
        "by_package_ms": {package: round(us / 1000, 1) for package, us in ranked[:15]},
        "loaded": sorted(best),
    }


def _mounts_file(path: Path, mounts: int) -> Path:
    lines = "".join(
        f"  - {{path: m{n:03d}/, plugin: {'kv' if n % 2 else 'transit'}, "
        f"description: mount {n}, config: {{default_lease_ttl: 1h}}}}\n"
        for n in range(mounts)
    )
    path.write_text(f"version: 1\nsecrets:\n{lines}")
    return path


def run_processes(server: DevServer, workdir: Path, mounts: int, runs: int) -> dict[str, Any]:
    say(f"processes: `reconciler plan` (no-op, {mounts} built-in mounts) vs urllib, {runs} runs")
    populate(server, Population(), 0, mounts)
    desired = write_export(server, workdir / f"plan-process-{mounts}.yaml")
    env = python_env(workdir / "pycache", server_env(server))
    plan_command = [*reconciler_command(), "plan", str(desired), "--detailed-exitcode"]
    plan, floor, plan_ratio = side_by_side(
        plan_command, [sys.executable, "-c", URLLIB_FLOOR], runs, env
    )
    plan_imports = import_profile(
        ["-m", "reconciler", "plan", str(desired), "--detailed-exitcode"], env
    )

    say(f"processes: `reconciler validate` ({mounts}-mount file) vs importing its dependencies")
    file = _mounts_file(workdir / f"validate-{mounts}.yaml", mounts)
    validate, deps, validate_ratio = side_by_side(
        [*reconciler_command(), "validate", str(file)],
        [sys.executable, "-c", DEPENDENCIES_ONLY],
        runs,
        env,
    )
    # What `import pydantic` leaves out: pydantic loads its models' machinery lazily.
    base_model = summary([_timed([sys.executable, "-c", BASE_MODEL_TOO], env) for _ in range(runs)])
    bare = summary([_timed([sys.executable, "-c", "pass"], env) for _ in range(runs)])
    return {
        "mounts": mounts,
        "plan": plan,
        "urllib_floor": floor,
        "plan_over_floor": plan_ratio,
        "plan_imports": plan_imports,
        "validate": validate,
        "dependencies_import": deps,
        "validate_over_dependencies": validate_ratio,
        "validate_imports": import_profile(["-m", "reconciler", "validate", str(file)], env),
        "base_model_import": base_model,
        "python_bare": bare,
    }
