"""Watch mode: reconcile on every change of the desired file, on a timer and on request.

- `_schedule`: the pure scheduler (debounce, resync, backoff), over an injected clock;
- `_runner`: one watch pass around `reconcile.run_pass`, and what passes remember;
- `_observer`: the file observer (watchdog);
- `_watcher`: the worker loop tying them together;
- `_service`: the process around it (signals, the worker thread);
- `_metrics` and `_http`: prometheus_client metrics, /metrics and /healthz;
- `_logging`: text or JSON log lines.

Every pass is level-triggered: it reads the file, the token and the server afresh,
plans and applies, so a missed event or a crash only delays convergence.
"""

from __future__ import annotations

from reconciler.watch._http import MetricsServer
from reconciler.watch._logging import JsonFormatter, configure_logging
from reconciler.watch._metrics import Health, Metrics
from reconciler.watch._observer import concerns_file
from reconciler.watch._runner import PassOutcome, WatchOptions
from reconciler.watch._schedule import Scheduler, Timing
from reconciler.watch._service import run_until_signalled
from reconciler.watch._watcher import Watcher

__all__ = [
    "Health",
    "JsonFormatter",
    "Metrics",
    "MetricsServer",
    "PassOutcome",
    "Scheduler",
    "Timing",
    "WatchOptions",
    "Watcher",
    "concerns_file",
    "configure_logging",
    "run_until_signalled",
]
