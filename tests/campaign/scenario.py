"""Draw a fault scenario from a seed: pure, no I/O, the same seed gives the same scenario.

A scenario is a starting state (three demo-kv mounts, one in the child namespace
`team/`, and a database mount `db/` holding two demo-db connections), one desired
change, and one or two faults. The faults are removed one at a time, and `apply`
runs once with each set of faults still in place, then once with none left.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

KV_V1 = "v1.0.0"
KV_V2 = "v2.0.0"
DB_V1 = "v1.0.0"
DB_V2 = "v2.0.0"
NAMESPACE = "team/"


@dataclass(frozen=True)
class Mount:
    """A demo-kv mount: namespace ("" for the root) and path, both with a trailing slash."""

    namespace: str
    path: str

    @property
    def name(self) -> str:
        return f"{self.namespace}{self.path}"


ROOT_A = Mount("", "kv-a/")
ROOT_B = Mount("", "kv-b/")
TEAM_C = Mount(NAMESPACE, "kv-c/")
KV_MOUNTS = (ROOT_A, ROOT_B, TEAM_C)
MOVED_A = Mount("", "kv-moved/")
DB_MOUNT = "db/"
CONNECTIONS = ("orders", "billing")

# The desired changes, each from the same kind of starting state.
CHANGES = (
    "upgrade-one",  # kv-a/ v1 → v2
    "upgrade-several",  # every demo-kv mount v1 → v2 (canary, then the rest)
    "downgrade",  # every demo-kv mount v2 → v1
    "move",  # kv-a/ → kv-moved/
    "prune",  # kv-b/ leaves the file: disabled with --allow-destroy
    "repin",  # both connections demo-db v1 → v2
)

# Faults on the binary the change needs, on some nodes.
BINARY_FAULTS = ("binary-missing", "binary-broken", "binary-other-bytes")
BINARY_WHERE = ("one-standby", "active", "all-nodes")
# Faults at the k-th write of the apply.
WRITE_FAULTS = ("kill", "stop-standby", "stop-active", "error-5xx", "lost-answer")


@dataclass(frozen=True)
class Fault:
    kind: str
    # Binary faults: which nodes; write faults: "" .
    where: str = ""
    # Write faults: the write after (or at) which it strikes, 1-based.
    at_write: int = 0

    @property
    def label(self) -> str:
        if self.kind in BINARY_FAULTS:
            return f"{self.kind} on {self.where}"
        return f"{self.kind} at write {self.at_write}"


@dataclass(frozen=True)
class Scenario:
    seed: int
    change: str
    # The v1 entry (demo-kv or demo-db) leaves the catalog once the change is verified.
    deregister_old: bool
    # The file says `reload_scope: global`; otherwise the tool must find the cluster itself.
    global_scope_in_file: bool
    faults: tuple[Fault, ...] = field(default=())

    @property
    def start_version(self) -> str:
        """What the demo-kv mounts run before the first apply."""
        return KV_V2 if self.change == "downgrade" else KV_V1

    @property
    def new_binary(self) -> tuple[str, str] | None:
        """(plugin, version) of the binary the change starts, if it starts one."""
        if self.change in {"upgrade-one", "upgrade-several"}:
            return ("demo-kv", KV_V2)
        if self.change == "downgrade":
            return ("demo-kv", KV_V1)
        if self.change == "repin":
            return ("demo-db", DB_V2)
        return None

    def kv_target(self, mount: Mount) -> str:
        """The version the file pins `mount` to."""
        if self.change == "upgrade-several" or (self.change == "upgrade-one" and mount == ROOT_A):
            return KV_V2
        if self.change == "downgrade":
            return KV_V1
        return self.start_version

    def connection_target(self) -> str:
        return DB_V2 if self.change == "repin" else DB_V1

    def describe(self) -> str:
        faults = " + ".join(f.label for f in self.faults) or "no fault"
        extra = ", old entry deregistered" if self.deregister_old else ""
        scope = ", reload_scope: global" if self.global_scope_in_file else ""
        return f"seed {self.seed}: {self.change}{extra}{scope}; {faults}"


def draw(seed: int, writes_of_change: dict[str, int] | None = None) -> Scenario:
    """The scenario of `seed`. `writes_of_change` bounds k (default: a generous guess)."""
    rng = random.Random(seed)
    change = rng.choice(CHANGES)
    deregister_old = change in {"upgrade-several", "downgrade", "repin"} and rng.random() < 0.5
    global_scope = rng.random() < 0.5
    writes = (writes_of_change or {}).get(change, _WRITES_GUESS[change])
    candidates = list(WRITE_FAULTS)
    scenario = Scenario(seed, change, deregister_old, global_scope)
    if scenario.new_binary is not None:
        candidates += list(BINARY_FAULTS)
    first = _fault(rng, rng.choice(candidates), writes)
    faults = [first]
    if rng.random() < 0.5:
        # A second fault of the other family: a binary fault meets a write fault.
        other = [
            kind for kind in candidates if (kind in BINARY_FAULTS) != (first.kind in BINARY_FAULTS)
        ]
        if other:
            faults.append(_fault(rng, rng.choice(other), writes))
    # Binary faults first: they are in place before the first run and removed last.
    faults.sort(key=lambda f: f.kind not in BINARY_FAULTS)
    return Scenario(seed, change, deregister_old, global_scope, tuple(faults))


# Where a write fault may strike: k is drawn from 1 to this. It is below the writes a
# fault-free apply of some changes makes (upgrade-several: register, 3 tunes, 3 reloads,
# the deregistration: 8), so the last writes are seldom hit here; tests/test_crash.py
# kills an upgrade after each of its writes. Changing a number changes every seed.
_WRITES_GUESS = {
    "upgrade-one": 3,
    "upgrade-several": 6,
    "downgrade": 5,
    "move": 1,
    "prune": 1,
    "repin": 3,
}


def _fault(rng: random.Random, kind: str, writes: int) -> Fault:
    if kind in BINARY_FAULTS:
        return Fault(kind, where=rng.choice(BINARY_WHERE))
    return Fault(kind, at_write=rng.randint(1, max(1, writes)))
