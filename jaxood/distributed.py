"""Joining a multi-host job: `jax.distributed.initialize()` when the launcher asks for it.

`launch/tpu_pod.sh` and `launch/slurm_gpu.sbatch` set `JAXOOD_DISTRIBUTED=1`;
`jax.distributed` then finds the coordinator, the process count and this
process's index from the cluster (TPU VM metadata, SLURM's variables). Every
entry point (`train`, `evaluate`) calls this before any JAX computation, so the
hosts share one job: each reads its slice of every batch and only the first
writes the report.
"""

from __future__ import annotations

import os

import jax


def maybe_initialize() -> None:
    """Join the multi-host job when `JAXOOD_DISTRIBUTED=1` (once; later calls do nothing)."""
    if os.environ.get("JAXOOD_DISTRIBUTED") == "1" and not jax.distributed.is_initialized():
        jax.distributed.initialize()
