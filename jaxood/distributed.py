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
import math
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxood.errors import InvalidInput, first_line


def maybe_initialize() -> None:
    """Join the multi-host job when `JAXOOD_DISTRIBUTED=1` (once; later calls do nothing), then check that JAX
    starts the platforms `JAX_PLATFORMS` asks for (`check_platforms`)."""
    if os.environ.get("JAXOOD_DISTRIBUTED") == "1" and not jax.distributed.is_initialized():
        jax.distributed.initialize(local_device_ids=slurm_node_gpus())
    check_platforms()


def check_platforms() -> None:
    """Where `JAX_PLATFORMS` names a platform this JAX install cannot start (`cuda` with the CPU-only JAX that
    `pip install -e .` gives, as a cluster's module may set it), the first use of the devices was a traceback: a bare
    AssertionError for `cuda` (jax 0.10.2), an unknown backend 'rocm' for `gpu`, a missing libtpu.so for `tpu`. It
    is one line now, with the fix."""
    if not (asked := os.environ.get("JAX_PLATFORMS")):
        return
    try:
        jax.devices()
    except (RuntimeError, AssertionError) as err:
        reason = f" ({first_line(err)})" if str(err).strip() else ""
        raise InvalidInput(
            f"JAX cannot start the platform(s) JAX_PLATFORMS={asked!r} asks for{reason}: install JAX for them (NVIDIA "
            'GPUs: pip install "jax[cuda12]"; a TPU VM: pip install "jax[tpu]"), or unset JAX_PLATFORMS to run on '
            "the devices JAX finds (the CPU at least)"
        ) from err


def slurm_node_gpus() -> list[int] | None:
    """Every GPU of this node where a SLURM step runs one task on each of its nodes (launch/slurm_gpu.sbatch's layout):
    there `jax.distributed.initialize()` shows each task only the GPU of its local rank (JAX's default of one process
    per GPU), and a node trained on 1 of its 8 GPUs. Their count is CUDA_VISIBLE_DEVICES's (or ROCm's), else
    SLURM_GPUS_ON_NODE. None elsewhere (a task per GPU, no SLURM, no GPU said, JAX_LOCAL_DEVICE_IDS set): JAX's own
    choice stands."""
    env = os.environ
    step = env.get("SLURM_STEP_NUM_TASKS"), env.get("SLURM_STEP_NUM_NODES")
    if "SLURM_LOCALID" not in env or env.get("JAX_LOCAL_DEVICE_IDS") or None in step or step[0] != step[1]:
        return None
    visible = env.get("CUDA_VISIBLE_DEVICES") or env.get("ROCR_VISIBLE_DEVICES") or ""
    gpus = visible.split(",") if all(d.strip().isdigit() for d in visible.split(",")) else []  # not "NoDevFiles"
    on_node = env.get("SLURM_GPUS_ON_NODE", "")
    count = len(gpus) or (int(on_node) if on_node.isdigit() else 0)
    return list(range(count)) if count > 1 else None


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


def on_every_host(found: bool) -> bool:
    """Whether every host of the job `found` it (this host's answer in one process); a collective. A cache each host
    keeps on its own disk is used only where every host has it: a host without it (one replaced after a
    preemption) computes, and would otherwise meet the others in other collectives."""
    return bool(every_host(np.array([found])).all()) if jax.process_count() > 1 else found


def layout_differences(tree) -> str:
    """How the arrays of `tree` differ between the hosts of the job in names, shapes or dtypes, said for an error (""
    where they do not); a collective: every host must call it. It swaps fixed-size summaries only (swapping arrays of
    other shapes aborted every host, as JAX's own check of their values did): the count and size of each host's
    arrays and a hash of their layout, then, where the counts agree, a hash of each array's name, shape and dtype."""
    leaves = _named_leaves(tree)  # their shapes and dtypes only: arrays placed already stay where they are
    shapes = {
        path: (np.shape(leaf), np.dtype(getattr(leaf, "dtype", None) or np.result_type(leaf)))
        for path, leaf in leaves.items()
    }
    layouts = [repr((path, shape, str(dtype))).encode() for path, (shape, dtype) in shapes.items()]
    kib = sum(math.prod(shape) * dtype.itemsize for shape, dtype in shapes.values()) // 1024
    summary = every_host(np.array([len(leaves), min(kib, 2**31 - 1), *digest(b"".join(layouts))], np.int32))
    what = "the hosts of this job hold arrays of other names or shapes to place on every device"
    if (summary == summary[:1]).all():
        return ""
    if (summary[:, 0] != summary[0, 0]).any():  # no array to compare with another host's
        sizes = "; ".join(f"host {h}: {n} arrays, {k / 1024:.1f} MiB" for h, (n, k) in enumerate(summary[:, :2]))
        return f"{what} ({sizes})"
    return f"{what}: {_which_differ(list(leaves), [digest(layout) for layout in layouts])}"


def value_differences(tree) -> str:
    """Which arrays of `tree`, the same in name and shape on every host of the job (`layout_differences`), differ in
    value between them, and on which hosts, said for an error ("" where none does); a collective. Arrays on the
    devices already are not read (`placed`)."""
    leaves = {path: leaf for path, leaf in _named_leaves(tree).items() if not placed(leaf)}
    digests = [digest(np.ascontiguousarray(leaf).reshape(-1).view(np.uint8)) for leaf in leaves.values()]  # no copy
    said = _which_differ(list(leaves), digests)
    return f"the hosts of this job hold different values of what they place on every device: {said}" if said else ""


def placed(leaf) -> bool:
    """Whether `leaf` is on the devices already, where it was placed (and its values compared) before: an array
    committed to its devices, which in a multi-host job no host can read whole."""
    return isinstance(leaf, jax.Array) and leaf.committed


def differing(paths: list[str], digests: list[np.ndarray]) -> tuple[list[str], list[int]]:
    """Which of `paths` have other `digests` (`digest`) on some host than on the first, and which hosts those are
    (two empty lists where none do); a collective: every host must call it, with as many paths (none: no swap)."""
    if not paths:
        return [], []
    every = every_host(np.stack(digests))  # (hosts, paths, 4)
    differs = (every != every[:1]).any(-1)  # (hosts, paths): each host's digests against the first host's
    return [path for path, d in zip(paths, differs.any(0)) if d], np.flatnonzero(differs.any(1)).tolist()


def _which_differ(paths: list[str], digests: list[np.ndarray]) -> str:
    """`differing` arrays said for an error ("" where none do)."""
    named, hosts = differing(paths, digests)
    if not named:
        return ""
    listed = ", ".join(named[:5]) + (" ..." if len(named) > 5 else "")
    return f"{len(named)} array(s) differ between host 0 and host(s) {', '.join(map(str, hosts))} ({listed})"


def _named_leaves(tree) -> dict:
    """`tree`'s leaves by path (`a/b/c`)."""
    return {
        "/".join(_key_name(key) for key in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def digest(data) -> np.ndarray:
    """128 bits of the SHA-256 of `data` (bytes, or an array of bytes read in place), as 4 int32: what the hosts swap
    (`every_host`) to compare what each holds."""
    return np.frombuffer(hashlib.sha256(data).digest()[:16], np.int32)


def _key_name(key) -> str:
    """A tree path's step as a name: a dict's key, a list's index, a dataclass's field."""
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)
