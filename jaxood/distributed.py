"""Joining a multi-host job: `jax.distributed.initialize()` when the launcher asks for it.

`launch/tpu_pod.sh` and `launch/slurm_gpu.sbatch` set `JAXOOD_DISTRIBUTED=1`;
`jax.distributed` then finds the coordinator, the process count and this
process's index from the cluster (TPU VM metadata, SLURM's variables). Every
entry point (`train`, `evaluate`) calls this before any JAX computation, so the
hosts share one job: each reads its slice of every batch and only the first
writes the report.

What is true of the whole job (its sizes, the compiled step, the report) is said by
the first host alone (`log`, `is_first_host`); what one host saw (its undecodable
images) it says itself, naming the host.
"""

from __future__ import annotations

import hashlib
import os

import jax
import numpy as np
from jax.experimental import multihost_utils


def maybe_initialize() -> None:
    """Join the multi-host job when `JAXOOD_DISTRIBUTED=1` (once; later calls do nothing)."""
    if os.environ.get("JAXOOD_DISTRIBUTED") == "1" and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def is_first_host() -> bool:
    """The host that writes the job's report, metrics and progress (the only one without multi-host)."""
    return jax.process_index() == 0


def log(message: str) -> None:
    """Print a line about the whole job once: from the first host (every host would print the same line)."""
    if is_first_host():
        print(message, flush=True)


def every_host(array: np.ndarray) -> np.ndarray:
    """`array` of every host of the job, stacked in host order: what each host found, swapped (a collective: every
    host must call it, with an array of the same shape)."""
    return np.asarray(multihost_utils.process_allgather(array))


def differences(tree) -> str:
    """What differs in `tree` between the hosts of the job, said for an error ("" where nothing does): the arrays'
    names, shapes or number, else which arrays' values differ, and on which hosts (a collective: every host must
    call it; each swaps a fixed-size summary first, since arrays of other shapes would not swap)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    paths = ["/".join(_key_name(key) for key in path) for path, _ in leaves]
    arrays = [np.ascontiguousarray(np.asarray(leaf)) for _, leaf in leaves]
    layout = repr([(path, a.shape, str(a.dtype)) for path, a in zip(paths, arrays)]).encode()
    kib = sum(a.nbytes for a in arrays) // 1024  # an int32 up to 2 TiB
    summary = every_host(np.array([len(arrays), kib, *_digest(layout)], np.int32))
    if (summary != summary[:1]).any():
        sizes = "; ".join(f"host {h}: {n} arrays, {k / 1024:.1f} MiB" for h, (n, k) in enumerate(summary[:, :2]))
        return f"the hosts of this job hold arrays of other names or shapes to place on every device ({sizes})"
    every = every_host(np.stack([_digest(a.tobytes()) for a in arrays]))  # (hosts, arrays, 4)
    differs = (every != every[:1]).any(-1)  # (hosts, arrays), against the first host
    if not differs.any():
        return ""
    named = [path for path, d in zip(paths, differs.any(0)) if d]
    hosts = ", ".join(map(str, np.flatnonzero(differs.any(1))))
    return (
        f"the hosts of this job hold different values of what they place on every device: {len(named)} array(s) "
        f"differ between host 0 and host(s) {hosts} ({', '.join(named[:5])}{' ...' if len(named) > 5 else ''})"
    )


def _digest(data: bytes) -> np.ndarray:
    """128 bits of `data`'s SHA-256, as 4 int32 (what `every_host` swaps)."""
    return np.frombuffer(hashlib.sha256(data).digest()[:16], np.int32)


def _key_name(key) -> str:
    """A tree path's step as a name: a dict's key, a list's index, a dataclass's field."""
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)
