"""The seeded fault campaign on the real 3-node cluster (docs/safety.md, "The fault campaign").

Each seed draws a change and one or two faults (tests/campaign/scenario.py), runs
`apply --json` as a process with the faults in place, removes them one at a time
and runs it again, and checks the invariants after every run with plain reads of
each node (tests/campaign/checker.py). These seeds are fixed; `make soak SEEDS=N`
runs more, and a failing seed is replayed with `make soak SEED=N`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.campaign.runner import replay_command, run_seed
from tests.cluster import Cluster

# Between them: an upgrade of one mount and of several, a downgrade, a prune and a
# re-pin; a binary missing on one standby, broken on one standby and on every node; a
# kill, a 5xx, a lost answer and a standby restarted mid-apply; watch holding the failed
# upgrade (seed 31); an upgrade of mounts in the root and in the child namespace whose
# binary has other bytes on one standby (seed 22, which failed while per-node work
# covered the client's namespace only); a move whose standbys keep the old path until
# the operator seals and unseals them, as the output says (seed 9). Seed 31 fails when
# per-node verification, the rollback or watch's hold is disabled, seed 9 when a move
# standbys did not follow is not reported (docs/testing.md).
FIXED_SEEDS = (2, 7, 9, 10, 19, 21, 22, 31)


@pytest.mark.parametrize("seed", FIXED_SEEDS)
def test_the_invariants_hold_for_seed(cluster: Cluster, tmp_path: Path, seed: int) -> None:
    report = run_seed(cluster, seed, tmp_path)
    assert not report.violations, f"replay with: {replay_command(seed)}\n{report.text()}"
