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
