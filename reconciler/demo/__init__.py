"""`reconciler demo`, the throw-away OpenBao dev server it runs on, and the example plugins.

- `run_demo` narrates validate → plan → apply → upgrade on a dev server (`_run`).
- `reconciler.demo.devserver` starts `bao server -dev` (also used by the tests and benchmarks).
- `reconciler.demo.examples` holds the example desired-state files and, under `plugins`,
  real external plugins written in Python.

The names below are imported on first use: the example plugins run as their own
processes and import `reconciler.demo.examples.plugins`, which must not pull in
the demo's dependencies (the planner, the client, click) at every plugin start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.demo._run import (
        DESIRED,
        DESIRED_UPGRADE,
        DemoFailed,
        DemoOutcome,
        example_file,
        run_demo,
    )

__all__ = ["DESIRED", "DESIRED_UPGRADE", "DemoFailed", "DemoOutcome", "example_file", "run_demo"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("reconciler.demo._run"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
