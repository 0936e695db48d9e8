"""Benchmarks of `reconciler` against the alternatives, on a real OpenBao server.

`python -m benchmarks.run` (or `make bench`) runs them all; docs/benchmarks.md
explains what each one measures and reports the numbers against SPEC §7.
"""
