"""Work done on local files before any request: hashing plugin binaries, parsing the YAML."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from benchmarks.common import MIB, rounded, say, summary

# Private, but it is exactly what SPEC §7's hashing target is about; the public
# `load_desired` is timed next to it.
from reconciler.loader import file_digest, load_desired


def _hash_desired(directory: Path, command: str) -> str:
    # No sha256: the loader computes it from the file, which is what is timed.
    return (
        "version: 1\n"
        f"plugin_directory: {directory}\n"
        "plugins:\n"
        f"  - {{type: secret, name: big-plugin, version: v1.0.0, command: {command}}}\n"
    )


def run_hashing(workdir: Path, size_mib: int, runs: int) -> dict[str, Any]:
    """The loader hashing a `size_mib` MiB plugin binary vs `hashlib.file_digest`.

    "The loader's hashing" is the function `load_desired` hashes each plugin
    file with; the whole `load_desired` of a one-entry file is timed as well,
    to show what parsing and validation add. The file is read once first so
    every run reads from the page cache, and the runs alternate so that
    frequency scaling and cache effects hit all of them alike.
    """
    directory = workdir / "hash-plugins"
    directory.mkdir(parents=True, exist_ok=True)
    binary = directory / "big-plugin"
    say(f"hashing: writing a {size_mib} MiB file")
    block = os.urandom(MIB)
    with binary.open("wb") as handle:
        for _ in range(size_mib):
            handle.write(block)
    desired = workdir / "hash-desired.yaml"
    desired.write_text(_hash_desired(directory, binary.name))
    try:
        with binary.open("rb") as handle:
            expected = hashlib.file_digest(handle, "sha256").hexdigest()
        reference, ours, whole = [], [], []
        for _ in range(runs):
            started = time.perf_counter()
            with binary.open("rb") as handle:
                hashlib.file_digest(handle, "sha256")
            reference.append(time.perf_counter() - started)
            started = time.perf_counter()
            digest, failure = file_digest(binary)
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            loaded = load_desired(desired)
            whole.append(time.perf_counter() - started)
            if failure or digest != expected or loaded.state.plugins[0].sha256 != expected:
                raise RuntimeError("the loader computed another sha256 than hashlib")
    finally:
        binary.unlink(missing_ok=True)
    # Best of each: the least disturbed run of either is the fairest comparison.
    reference_s, ours_s, whole_s = min(reference), min(ours), min(whole)
    return {
        "file_mib": size_mib,
        "hashlib_file_digest": summary(reference),
        "loader_hashing": summary(ours),
        "load_desired": summary(whole),
        "hashlib_mib_per_s": round(size_mib / reference_s),
        "loader_mib_per_s": round(size_mib / ours_s),
        "speed_ratio": rounded(reference_s / ours_s, 3),
        "load_desired_speed_ratio": rounded(reference_s / whole_s, 3),
    }


def _many_mounts(count: int) -> str:
    lines = ["version: 1", "secrets:"]
    for index in range(count):
        lines += [
            f"  - path: team-{index:04d}/",
            f"    plugin: {'kv' if index % 2 else 'transit'}",
            f"    description: mount number {index}",
            "    config: {default_lease_ttl: 1h, max_lease_ttl: 24h}",
        ]
    return "\n".join(lines) + "\n"


def run_parsing(workdir: Path, mounts: int, runs: int) -> dict[str, Any]:
    """Loading a `mounts`-mount file, next to the two ruamel parsers SPEC §7 quotes."""
    say(f"parsing: a {mounts}-mount desired file")
    text = _many_mounts(mounts)
    path = workdir / f"parse-{mounts}.yaml"
    path.write_text(text)
    timings: dict[str, list[float]] = {"load_desired": [], "ruamel_rt": [], "ruamel_safe_c": []}
    for _ in range(runs):
        started = time.perf_counter()
        loaded = load_desired(path)
        timings["load_desired"].append(time.perf_counter() - started)
        started = time.perf_counter()
        YAML(typ="rt").load(io.StringIO(text))
        timings["ruamel_rt"].append(time.perf_counter() - started)
        started = time.perf_counter()
        YAML(typ="safe", pure=False).load(io.StringIO(text))
        timings["ruamel_safe_c"].append(time.perf_counter() - started)
    if len(loaded.state.secrets) != mounts:
        raise RuntimeError("the loader lost mounts")
    result: dict[str, Any] = {"mounts": mounts, "bytes": len(text.encode())}
    result.update({name: summary(samples) for name, samples in timings.items()})
    result["load_over_safe_c"] = rounded(
        result["load_desired"]["median_s"] / result["ruamel_safe_c"]["median_s"], 2
    )
    return result
