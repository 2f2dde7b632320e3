"""Will a compiled step fit in a device's memory? Asked before the first step runs.

XLA sizes every buffer of an executable when it compiles it, so the memory a
step needs is known exactly before it runs. Running a step that does not fit
ends in RESOURCE_EXHAUSTED from deep inside XLA (on the CPU after the step has
allocated what it could); `compile_within_memory` instead stops with the sizes
and the settings that shrink them.
"""

from __future__ import annotations

import os
import time

import jax

from jaxood import distributed
from jaxood.errors import InvalidInput

GiB = 2**30


def step_bytes(compiled: jax.stages.Compiled) -> int:
    """Peak bytes one device holds for a call: arguments, outputs not written over the donated arguments, temps."""
    m = compiled.memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes


def host_bytes() -> int:
    """The memory this process may use: the host's RAM, or less where its cgroup limits it (a SLURM job's `--mem`, a
    container's memory limit), past which the system kills the process."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(ram, cgroup_memory_limit() or ram)


# cgroup v1's memory limit when none is set: the largest page-aligned int64 (9223372036854771712), or near it.
_NO_V1_LIMIT = 2**62


def cgroup_memory_limit(root: str = "/") -> int | None:
    """The least memory limit on this process's cgroup and the cgroups above it (v2 `memory.max`, v1
    `memory.limit_in_bytes`), found from `/proc/self/cgroup` and where `/proc/self/mountinfo` says the hierarchies
    are mounted; None where none is set or none can be read. `root` stands for `/` (tests)."""
    try:
        with open(os.path.join(root, "proc/self/cgroup"), encoding="utf-8") as f:
            groups = [line.rstrip("\n").split(":", 2) for line in f]
        with open(os.path.join(root, "proc/self/mountinfo"), encoding="utf-8") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return None
    # The process's cgroup in each file system type: v2's line is "0::PATH", v1's memory line "N:...memory...:PATH".
    paths = {}
    for group in groups:
        if len(group) == 3 and (group[1] == "" or "memory" in group[1].split(",")):
            paths["cgroup2" if group[1] == "" else "cgroup"] = group[2]
    limits = []
    for fields in mounts:  # ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER_OPTIONS
        end = fields.index("-", 6) if "-" in fields[6:] else len(fields)
        kind, super_options = (fields[end + 1], fields[end + 3].split(",")) if len(fields) >= end + 4 else ("", [])
        if kind not in paths or (kind == "cgroup" and "memory" not in super_options):
            continue
        mount_root, top, path = fields[3].rstrip("/"), os.path.join(root, fields[4].lstrip("/")), paths[kind]
        # Below the mount's own root the path goes on from the mount point; elsewhere (a container shown its host's
        # path) the mount point is the process's cgroup.
        below = path.startswith(mount_root + "/")
        folder = os.path.normpath(os.path.join(top, path[len(mount_root) + 1 :] if below else ""))
        limits += _limits_up_to(
            folder, os.path.normpath(top), "memory.max" if kind == "cgroup2" else "memory.limit_in_bytes"
        )
    return min(limits) if limits else None


def _limits_up_to(folder: str, top: str, name: str) -> list[int]:
    """The limits set in file `name` of `folder` and of each folder above it up to `top` (v2 says "max" where none is
    set, v1 a number near 2**63)."""
    limits = []
    while True:
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                value = f.read().strip()
            if value.isdigit() and int(value) < _NO_V1_LIMIT:
                limits.append(int(value))
        except OSError:
            pass
        if folder == top or not folder.startswith(top + os.sep):
            return limits
        folder = os.path.dirname(folder)


def device_bytes() -> int:
    """Memory of one local device: the accelerator allocator's limit, or on CPU `host_bytes` shared by its devices."""
    stats = jax.local_devices()[0].memory_stats()
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return host_bytes() // jax.local_device_count()


def compile_within_memory(fn: jax.stages.Wrapped, *args, what: str, fixes: str) -> jax.stages.Compiled:
    """`fn` (a `jax.jit` function) compiled for `args`; a `what` ("train step") that cannot fit raises
    `InvalidInput` naming the settings that shrink it (`fixes`, after "set")."""
    distributed.log(f"{what}: compiling")
    t0 = time.monotonic()
    compiled = fn.lower(*args).compile()
    need, have = step_bytes(compiled), device_bytes()
    distributed.log(
        f"{what}: compiled in {time.monotonic() - t0:.1f} s; needs {need / GiB:.2f} GiB per device (XLA's buffer "
        f"sizes) of {have / GiB:.1f} GiB"
    )
    if need > have:
        raise InvalidInput(
            f"the {what} needs {need / GiB:.1f} GiB per device and a device has {have / GiB:.1f} GiB: set {fixes}"
        )
    return compiled
