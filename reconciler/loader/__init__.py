"""Load a desired-state file: bytes → YAML → model → cross-references → plugin files.

Every problem is reported at the position of the offending key or value
(`FILE:LINE:COL: message`), all of them at once. Hostile files cost bounded
time and memory: the size is checked before reading, and the YAML pass bounds
nesting depth and alias expansion as it goes.

Modules: `_yaml` (text → values, and positions back), `_pipeline` (the order
of the checks, schema errors), `_references` (rules between entries, pure),
`_plugin_files` (binaries in the local plugin directory).
"""

from reconciler.loader._pipeline import (
    DEFAULT_MAX_FILE_SIZE,
    LoadedDesired,
    load_desired,
    load_desired_text,
)
from reconciler.loader._plugin_files import file_digest
from reconciler.loader._references import ReferenceProblem, check_references
from reconciler.loader._yaml import MAX_ALIAS_NODES, MAX_DEPTH, MAX_PROBLEMS

__all__ = [
    "DEFAULT_MAX_FILE_SIZE",
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_PROBLEMS",
    "LoadedDesired",
    "ReferenceProblem",
    "check_references",
    "file_digest",
    "load_desired",
    "load_desired_text",
]
