"""jaxood: CLIP-based out-of-distribution detection in JAX/Flax."""

import os

__version__ = "0.1.0"

# Its workdir lock (fcntl's flock) and its stops on a closed terminal (SIGHUP) are POSIX's: on Windows importing
# them failed with a traceback of the missing module.
if os.name == "nt":
    raise ImportError(
        "jaxood needs a POSIX system (Linux, macOS): it locks its workdir with fcntl and saves a run on "
        "SIGHUP, which Windows does not have. On Windows, run it inside WSL."
    )

# XLA:CPU runs dots through XNNPACK with this flag: measured ~10% faster CLIP
# towers on a 2-core CPU (README "Performance"). It affects only the CPU
# backend and only if set before jax starts its backends; a user's own
# `--xla_cpu_use_xnnpack=...` in XLA_FLAGS wins.
if "xla_cpu_use_xnnpack" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_use_xnnpack=true").strip()
