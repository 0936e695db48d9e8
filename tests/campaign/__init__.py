"""The seeded fault campaign on the 3-node cluster (docs/safety.md).

`scenario` draws a change and its faults from a seed (pure); `world` writes the
starting state with plain HTTP and the desired file; `faults` puts the faults in
place and takes them away; `checker` reads every node on its own and states the
invariants; `runner` runs one seed, or many with a summary (`make soak`).
"""
