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
    """This host's RAM."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_bytes() -> int:
    """Memory of one local device: the accelerator allocator's limit, or on CPU the host's RAM shared by its devices."""
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
