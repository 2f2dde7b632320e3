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


def leaves_that_differ(tree) -> tuple[list[str], list[int]]:
    """The leaves of `tree` whose values differ between the hosts of the job (paths `a/b/c`), and the hosts whose
    values differ from the first host's (a collective: every host must call it, with a tree of the same structure;
    a leaf placed on devices already must be a whole copy on each, as `replicate` places them)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    mine = np.zeros((len(leaves), 4), np.int32)  # 128 bits of each leaf's hash
    for row, (_, leaf) in enumerate(leaves):
        data = np.ascontiguousarray(np.asarray(leaf))
        mine[row] = np.frombuffer(hashlib.sha256(data.tobytes() + str(data.dtype).encode()).digest()[:16], np.int32)
    every = every_host(mine)  # (hosts, leaves, 4)
    differs = (every != every[:1]).any(-1)  # (hosts, leaves), against the first host
    paths = ["/".join(_key_name(key) for key in path) for path, _ in leaves]
    return [path for path, d in zip(paths, differs.any(0)) if d], [int(h) for h in np.flatnonzero(differs.any(1))]


def _key_name(key) -> str:
    """A tree path's step as a name: a dict's key, a list's index, a dataclass's field."""
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)
