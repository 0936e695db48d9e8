"""Watch mode as a process: signals on the main thread, passes on a worker thread."""

from __future__ import annotations

import logging
import signal
import threading

from reconciler.watch._http import MetricsServer
from reconciler.watch._watcher import Watcher

log = logging.getLogger("reconciler.watch")


def run_until_signalled(watcher: Watcher, metrics_server: MetricsServer | None = None) -> bool:
    """Run `watcher` until SIGTERM/SIGINT (SIGHUP forces a pass); False if it crashed.

    Must be called from the main thread, the only one that receives signals. The
    metrics server, if any, is closed on the way out.
    """

    def on_stop(signum: int, _frame: object) -> None:
        watcher.stop()
        # A second signal ends the process at once, whatever is running.
        signal.signal(signum, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: watcher.request_pass("signal"))
    crashed = threading.Event()

    def work() -> None:
        try:
            watcher.run_forever()
        except BaseException:
            crashed.set()
            log.exception("the watcher crashed")

    # Passes run on a worker so that signal handlers (main thread) never interrupt a lock holder.
    worker = threading.Thread(target=work, name="reconciler-watch")
    worker.start()
    try:
        while worker.is_alive():
            worker.join(timeout=0.5)
    finally:
        if metrics_server is not None:
            metrics_server.close()
    return not crashed.is_set()
