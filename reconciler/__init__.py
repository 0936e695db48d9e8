"""Keep an OpenBao/Vault plugin catalog and mount table equal to a desired-state file.

The library in one pass::

    from reconciler import Client, apply, load_desired, make_plan, read_live_state

    loaded = load_desired(Path("desired.yaml"))
    with Client.from_environment() as client:
        the_plan = make_plan(loaded.state, read_live_state(client))
        result = apply(client, the_plan, loaded)

Or the whole pass as `apply` and `watch` run it (lock, plan, policy, apply, verify)::

    with Client.from_environment() as client:
        outcome = run_pass(client, load_target(Path("desired.yaml")))

The names are imported on first use, so that `reconciler --help` and the example
plugins' processes do not load the planner, pydantic or httpx. The planner's `plan`
is named `make_plan` here: `reconciler.plan` is the module of the `Plan` model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from reconciler.client import Client
    from reconciler.errors import ApiError, DesiredStateError, ReconcilerError
    from reconciler.executor import ApplyOptions, ApplyResult
    from reconciler.export import export_desired
    from reconciler.loader import LoadedDesired, load_desired
    from reconciler.model import DesiredState, LiveState
    from reconciler.plan import Action, Plan
    from reconciler.planner import plan as make_plan
    from reconciler.reconcile import PassInput, PassResult, Verdict, apply, load_target, run_pass
    from reconciler.render import render_plan
    from reconciler.state import read_live_state

# Public name → (module, name in that module).
_PUBLIC: dict[str, tuple[str, str]] = {
    "Action": ("reconciler.plan", "Action"),
    "ApiError": ("reconciler.errors", "ApiError"),
    "ApplyOptions": ("reconciler.executor", "ApplyOptions"),
    "ApplyResult": ("reconciler.executor", "ApplyResult"),
    "Client": ("reconciler.client", "Client"),
    "DesiredState": ("reconciler.model", "DesiredState"),
    "DesiredStateError": ("reconciler.errors", "DesiredStateError"),
    "LiveState": ("reconciler.model", "LiveState"),
    "LoadedDesired": ("reconciler.loader", "LoadedDesired"),
    "PassInput": ("reconciler.reconcile", "PassInput"),
    "PassResult": ("reconciler.reconcile", "PassResult"),
    "Plan": ("reconciler.plan", "Plan"),
    "ReconcilerError": ("reconciler.errors", "ReconcilerError"),
    "apply": ("reconciler.reconcile", "apply"),
    "export_desired": ("reconciler.export", "export_desired"),
    "load_desired": ("reconciler.loader", "load_desired"),
    "load_target": ("reconciler.reconcile", "load_target"),
    "make_plan": ("reconciler.planner", "plan"),
    "read_live_state": ("reconciler.state", "read_live_state"),
    "render_plan": ("reconciler.render", "render_plan"),
    "run_pass": ("reconciler.reconcile", "run_pass"),
    "Verdict": ("reconciler.reconcile", "Verdict"),
}

__all__ = [
    "Action",
    "ApiError",
    "ApplyOptions",
    "ApplyResult",
    "Client",
    "DesiredState",
    "DesiredStateError",
    "LiveState",
    "LoadedDesired",
    "PassInput",
    "PassResult",
    "Plan",
    "ReconcilerError",
    "Verdict",
    "__version__",
    "apply",
    "export_desired",
    "load_desired",
    "load_target",
    "make_plan",
    "read_live_state",
    "render_plan",
    "run_pass",
]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
