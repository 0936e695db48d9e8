"""Curated mutants: each breaks one safety guarantee, and named tests must notice.

`catalog.py` lists them; `run.py` applies each to a copy of the repository and runs
the tests that should catch it (`make mutants`). See docs/testing.md.
"""
