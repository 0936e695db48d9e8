"""Run one seed on a cluster: set up, break, apply, repair, apply again, check after each run.

    python -m tests.campaign.runner --seed 1234        # replay one seed (own cluster)
    python -m tests.campaign.runner --seeds 200        # seeds 1..200, then a summary

`make soak SEED=1234` and `make soak SEEDS=200` call this.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from reconciler.demo.devserver import free_port
from reconciler.executor import KILL_AFTER_WRITES_ENV
from tests.campaign import checker
from tests.campaign.checker import ApplyRun
from tests.campaign.faults import WriteFaultProxy, restore_binaries, spoil_binary
from tests.campaign.scenario import BINARY_FAULTS, Fault, Scenario, draw
from tests.campaign.world import Before, desired_file, set_up
from tests.cluster import Cluster, ClusterError, start_cluster
from tests.server_reset import reset_server

APPLY_TIMEOUT = 240.0
# Watch runs (with a resync every second) until it has ended this many passes while a
# failed upgrade is held, or for WATCH_TIMEOUT seconds.
WATCH_PASSES = 2
# How often the reset and the starting state are tried before the seed is given up.
SET_UP_ATTEMPTS = 3
WATCH_TIMEOUT = 90.0
_PASS_ENDED = re.compile(r"\bpass (\d+) (?!started)")
# What a failing seed's report shows of each run's JSON document.
_CLAIM_KEYS = ("converged", "verdict", "failures", "rolled_back", "writes")


def replay_command(seed: int) -> str:
    return f"make soak SEED={seed}"


@dataclass
class SeedReport:
    scenario: Scenario
    runs: list[ApplyRun] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)  # faults that struck, by label
    watched: bool = False  # watch ran while the failed upgrade was held
    watch_note: str = ""
    set_up_retries: list[str] = field(default_factory=list)  # why the start was done again
    # What the output told an operator to do, done before the next run.
    operator_steps: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def text(self) -> str:
        lines = [self.scenario.describe(), f"  took {self.seconds:.1f}s"]
        lines += [f"  starting state written again: {why}" for why in self.set_up_retries]
        for number, run in enumerate(self.runs, 1):
            faults = ", ".join(run.faults) or "no fault"
            verdict = "killed" if run.killed else f"exit {run.exit_code}"
            lines.append(f"  run {number} ({faults}): {verdict}")
        lines += [f"  operator step: {step}" for step in self.operator_steps]
        if self.watch_note:
            lines.append(f"  {self.watch_note}")
        lines += [f"  VIOLATION {v}" for v in self.violations]
        if self.violations:
            lines.append(f"  replay: {replay_command(self.scenario.seed)}")
            for number, run in enumerate(self.runs, 1):
                lines.append(f"  run {number}'s stderr (its JSON holds the same claims):")
                lines += [f"    {line}" for line in run.stderr.splitlines()[-40:]]
                if run.document is not None:
                    claims = {k: run.document.get(k) for k in _CLAIM_KEYS if k in run.document}
                    lines.append(f"    JSON claims: {claims}")
        return "\n".join(lines)


def reset_cluster(cluster: Cluster) -> None:
    """What the `cluster` fixture does before each test: healthy, empty, example plugins.

    A standby whose table did not follow a move (a seed that stopped before its
    operator step) keeps disagreeing with the active: it is sealed and unsealed, as
    the tool's output tells an operator, so one seed cannot spoil the next ones.
    """
    cluster.heal()
    reset_server(cluster.active().address, cluster.root_token)
    try:
        cluster.wait_replicated()
    except ClusterError:
        for standby in cluster.standbys():
            cluster.seal_and_unseal(standby)
        cluster.wait_replicated()
    cluster.install_example_plugins()


def run_seed(cluster: Cluster, seed: int, workdir: Path) -> SeedReport:
    began = time.monotonic()
    scenario = draw(seed)
    report = SeedReport(scenario)
    checker.remember_addresses(cluster)
    workdir.mkdir(parents=True, exist_ok=True)
    before = _start(cluster, scenario, workdir, report)
    desired = desired_file(cluster, scenario, workdir)
    remaining = list(scenario.faults)
    for fault in remaining:
        if fault.kind in BINARY_FAULTS and scenario.new_binary is not None:
            nodes = spoil_binary(cluster, fault, scenario.new_binary)
            report.fired.append(f"{fault.kind} ({', '.join(nodes)})")
    while True:
        run = _apply(cluster, scenario, desired, remaining, report)
        report.runs.append(run)
        operator_step = _follow_the_named_fix(cluster, run, report)
        found = _check_run(
            cluster, scenario, before, run, final=not remaining and not operator_step
        )
        report.violations += [f"run {len(report.runs)}: {problem}" for problem in found]
        if operator_step:
            continue  # the same faults, once the operator did what the output said
        if not remaining:
            break
        if _watch_applies(scenario, remaining):
            found = _watch_holds(cluster, scenario, before, desired, report)
            report.violations += [f"watch: {problem}" for problem in found]
        removed = remaining.pop()
        if removed.kind in BINARY_FAULTS:
            restore_binaries(cluster)
        cluster.heal()
    report.seconds = time.monotonic() - began
    return report


# How apply names a node whose mount table did not follow a move (planner/_nodes.py).
_MOVE_NOT_FOLLOWED = re.compile(r"node (\S+)'s mount table did not follow the move")
# Operator steps a seed may take: one per move a node did not follow, with room to spare.
MAX_OPERATOR_STEPS = 2


def _follow_the_named_fix(cluster: Cluster, run: ApplyRun, report: SeedReport) -> bool:
    """Do what the output tells an operator to do about a move a standby did not follow
    (OpenBao 2.7 standbys take a sys/remount only once unsealed again): seal and unseal
    each node it names. The run itself is checked like any other: it must not claim
    to have converged."""
    named = sorted(set(_MOVE_NOT_FOLLOWED.findall(run.stdout + run.stderr)))
    if not named or len(report.operator_steps) >= MAX_OPERATOR_STEPS:
        return False
    for node in cluster.nodes:
        if node.address in named:
            cluster.seal_and_unseal(node)
    report.operator_steps.append(f"sealed and unsealed {', '.join(named)}")
    return True


def _start(cluster: Cluster, scenario: Scenario, workdir: Path, report: SeedReport) -> Before:
    """Reset the cluster and write the starting state; check it holds before any apply.

    Twice in ~120 seeds, mounts written right after the reset (db/ at the root,
    team/kv-c/ in the namespace the reset had just deleted and set-up created again)
    were gone before the first apply: the reset, the set-up and the check are tried
    again, and the report says so.
    """
    for attempt in range(1, SET_UP_ATTEMPTS + 1):
        reset_cluster(cluster)
        before = set_up(cluster, scenario, workdir / f"start-{attempt}")

        problems = checker.settled(functools.partial(_starting_problems, cluster, scenario, before))
        if not problems:
            return before
        report.set_up_retries.append(problems[0])
    raise RuntimeError(f"the starting state did not hold {SET_UP_ATTEMPTS} times: {problems}")


def _starting_problems(cluster: Cluster, scenario: Scenario, before: Before) -> list[str]:
    picture = checker.read_picture(cluster, scenario)
    found = checker.check_answers_and_data(picture, scenario, before, removed_allowed=False)
    return found + checker.check_pinned_as_run(picture)


def _apply(
    cluster: Cluster, scenario: Scenario, desired: Path, faults: list[Fault], report: SeedReport
) -> ApplyRun:
    write_fault = next((f for f in faults if f.kind not in BINARY_FAULTS), None)
    args = [sys.executable, "-m", "reconciler", "apply", "--yes", "--json", str(desired)]
    if scenario.change == "prune":
        args.insert(4, "--allow-destroy")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env.pop(KILL_AFTER_WRITES_ENV, None)
    env["BAO_TOKEN"] = cluster.root_token
    labels = tuple(f.label for f in faults)
    if write_fault is None or write_fault.kind == "kill":
        env["BAO_ADDR"] = cluster.active().address
        if write_fault is not None:
            env[KILL_AFTER_WRITES_ENV] = str(write_fault.at_write)
        done = _run(args, env, desired.parent)
        killed = done.returncode == -9
        if write_fault is not None and killed:
            report.fired.append(write_fault.kind)
        return ApplyRun(
            done.returncode,
            done.stdout,
            done.stderr,
            killed=killed,
            document=checker.parse_document(done.stdout),
            faults=labels,
        )
    with WriteFaultProxy(cluster, cluster.active(), write_fault) as proxy:
        env["BAO_ADDR"] = proxy.address
        done = _run(args, env, desired.parent)
    if proxy.fired:
        report.fired.append(write_fault.kind)
    return ApplyRun(
        done.returncode,
        done.stdout,
        done.stderr + (f"\n[campaign] struck: {proxy.struck}" if proxy.fired else ""),
        document=checker.parse_document(done.stdout),
        faults=labels,
    )


def _watch_applies(scenario: Scenario, remaining: list[Fault]) -> bool:
    """Watch is driven once a demo-kv upgrade has failed on a binary that is still bad."""
    return (
        scenario.new_binary is not None
        and scenario.new_binary[0] == "demo-kv"
        and bool(remaining)
        and all(f.kind in {"binary-broken", "binary-other-bytes"} for f in remaining)
    )


def _watch_holds(
    cluster: Cluster, scenario: Scenario, before: Before, desired: Path, report: SeedReport
) -> list[str]:
    """`watch` with a resync every second for WATCH_PASSES passes, the binary still bad:
    the failed upgrade is tried at most once, /healthz is not "ok", every mount answers."""
    assert scenario.new_binary is not None
    version = scenario.new_binary[1]
    port = free_port()
    args = [sys.executable, "-m", "reconciler", "watch", "--interval", "1s"]
    args += ["--metrics-port", str(port), str(desired)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env.pop(KILL_AFTER_WRITES_ENV, None)
    env["BAO_TOKEN"] = cluster.root_token
    never = Fault("watch", at_write=0)
    health: tuple[int, str] | None = None
    with WriteFaultProxy(cluster, cluster.active(), never) as proxy:
        env["BAO_ADDR"] = proxy.address
        with subprocess.Popen(
            args, env=env, cwd=desired.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        ) as watch:
            lines: list[str] = []
            output_pipe = watch.stdout
            assert output_pipe is not None
            reader = threading.Thread(
                target=lambda: lines.extend(line.decode(errors="replace") for line in output_pipe),
                daemon=True,
            )
            reader.start()
            deadline = time.monotonic() + WATCH_TIMEOUT
            while _passes_ended(lines) < WATCH_PASSES and time.monotonic() < deadline:
                if watch.poll() is not None:
                    break
                time.sleep(0.2)
            try:
                with httpx.Client(timeout=5) as http:
                    answer = http.get(f"http://127.0.0.1:{port}/healthz")
                health = (answer.status_code, answer.text.strip())
            except httpx.HTTPError as error:
                health = (0, str(error))
            watch.send_signal(signal.SIGTERM)
            try:
                watch.wait(timeout=60)
            except subprocess.TimeoutExpired:
                watch.kill()
                watch.wait()
            reader.join(timeout=5)
        output = "".join(lines)
        passes = _passes_ended(lines)
        attempts = [
            path
            for method, path, body in proxy.sent
            if path.split("?")[0].endswith("/tune") and f'"{version}"'.encode() in body
        ]
    report.watched = True
    writes = len(proxy.sent)
    report.watch_note = (
        f"watch: {passes} passes, {writes} writes, {len(attempts)} tunes to {version}, "
        f"/healthz {health}"
    )
    problems = []
    if len(attempts) > 1:
        problems.append(
            f"{checker.WATCH_HOLDS}: the failed upgrade to {version} was tried "
            f"{len(attempts)} times in {passes} passes ({', '.join(attempts)})"
        )
    if health is None or _says_ok(*health):
        problems.append(f"{checker.WATCH_HOLDS}: /healthz answered {health} while held")
    picture = checker.read_picture(cluster, scenario)
    problems += checker.check_answers_and_data(picture, scenario, before, removed_allowed=True)
    problems += checker.check_pinned_as_run(picture)
    if problems:
        tail = output.splitlines()[-30:]
        report.watch_note += "\n  watch's log ends with:\n    " + "\n    ".join(tail)
    return problems


def _says_ok(status: int, body: str) -> bool:
    """/healthz says all is well: 200 with "ok" (plain, or as the JSON `status`)."""
    if status != 200:
        return False
    try:
        document = json.loads(body)
    except ValueError:
        return body == "ok"
    return not isinstance(document, dict) or document.get("status") == "ok"


def _passes_ended(lines: list[str]) -> int:
    numbers = [int(m.group(1)) for line in list(lines) if (m := _PASS_ENDED.search(line))]
    return max(numbers, default=0)


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=APPLY_TIMEOUT, check=False
    )


def _check_run(
    cluster: Cluster, scenario: Scenario, before: Before, run: ApplyRun, final: bool
) -> list[str]:
    problems = checker.check_exit_code(run)
    if run.killed:
        return problems
    if not all(node.running for node in cluster.nodes):
        cluster.heal()  # a node stopped by the fault is started again before reading

    def invariants() -> list[str]:
        picture = checker.read_picture(cluster, scenario)
        found = checker.check_answers_and_data(picture, scenario, before, removed_allowed=True)
        found += checker.check_pinned_as_run(picture)
        found += checker.check_claims(run, picture, cluster, scenario, before)
        if final:
            found += [
                f"{checker.CONVERGES}: {p}"
                for p in checker.target_problems(picture, cluster, scenario)
            ]
        return found

    problems += checker.settled(invariants)
    if final and not run.converged:
        problems.append(
            f"{checker.CONVERGES}: the run without faults exited {run.exit_code}"
            f" (converged={run.document.get('converged') if run.document else None})"
        )
    return problems


@dataclass
class Summary:
    seeds: int = 0
    seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    fired: Counter[str] = field(default_factory=Counter)
    changes: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    failing: list[int] = field(default_factory=list)
    watched: int = 0

    def add(self, report: SeedReport) -> None:
        self.seeds += 1
        self.watched += report.watched
        self.changes[report.scenario.change] += 1
        for fault in report.scenario.faults:
            self.faults[fault.kind] += 1
        for fired in report.fired:
            self.fired[fired.split(" ")[0]] += 1
        for violation in report.violations:
            self.violations[violation.split(": ")[1]] += 1
        if report.violations:
            self.failing.append(report.scenario.seed)

    def text(self) -> str:
        def counts(counter: Counter[str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"

        lines = [
            f"seeds: {self.seeds} in {self.seconds:.0f}s",
            f"changes: {counts(self.changes)}",
            f"faults drawn by kind: {counts(self.faults)}",
            f"faults that struck by kind: {counts(self.fired)}",
            f"watch runs while a failed upgrade was held: {self.watched}",
            f"invariant violations: {sum(self.violations.values())}"
            + (f" ({counts(self.violations)})" if self.violations else ""),
        ]
        if self.failing:
            lines.append("failing seeds: " + " ".join(map(str, self.failing)))
            lines += [f"  replay: {replay_command(seed)}" for seed in self.failing[:10]]
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--seed", type=int, action="append", help="replay this seed")
    group.add_argument("--seeds", type=int, help="run seeds FIRST..FIRST+N-1")
    parser.add_argument("--first", type=int, default=1)
    options = parser.parse_args(argv)
    seeds = options.seed or list(range(options.first, options.first + options.seeds))
    # A stopped soak stops its cluster too: SIGTERM unwinds like Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    workdir = Path(tempfile.mkdtemp(prefix="reconciler-campaign-"))
    began = time.monotonic()
    cluster = start_cluster(workdir=workdir / "cluster")
    summary = Summary()
    try:
        cluster.install_example_plugins()
        for seed in seeds:
            try:
                report = run_seed(cluster, seed, workdir / f"seed-{seed}")
            except KeyboardInterrupt:
                print(f"interrupted during seed {seed}: the summary covers the seeds before it")
                break
            except Exception as error:  # a crash of the campaign itself is a finding too
                report = SeedReport(draw(seed))
                report.violations.append(f"campaign error: {type(error).__name__}: {error}")
            summary.add(report)
            print(report.text(), flush=True)
    finally:
        cluster.stop()
    summary.seconds = time.monotonic() - began
    print("\n" + summary.text())
    return 1 if summary.failing else 0


if __name__ == "__main__":
    raise SystemExit(main())
