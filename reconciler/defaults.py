"""Every default that more than one module (or a module and its docs) relies on, once.

Durations are in seconds.
"""

from __future__ import annotations

# Desired-state files larger than this are refused before parsing.
MAX_FILE_SIZE = 4 * 1024 * 1024
# More destructive actions than this in one plan are refused, even with --allow-destroy.
MAX_DESTROY = 3

# One HTTP request to the server, when BAO_CLIENT_TIMEOUT does not say.
CLIENT_TIMEOUT = 30.0

# Watch mode.
WATCH_INTERVAL = 60.0
WATCH_DEBOUNCE = 0.2
WATCH_BACKOFF_INITIAL = 1.0
WATCH_BACKOFF_MAX = 60.0
# How long a watch pass waits for another reconciler on this machine to release the server.
WATCH_LOCK_TIMEOUT = 30.0

# Clusters: how long a standby may lag the active node before it counts as not having
# a registered entry or a reloaded mount (standbys lag 0.1-2 s; global reloads queue).
NODE_LAG_WAIT = 15.0
# A mount that has not answered on a node for this long, while it is waited for, has
# failed to start there: it is repaired at once rather than at the end of NODE_LAG_WAIT
# (a plugin starting slowly costs at most one more local reload).
NODE_DEAD_WAIT = 3.0
