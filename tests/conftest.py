"""Shared fixtures (randomly initialised Hugging Face CLIPs saved with `save_pretrained`) and helpers."""

import contextlib
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# JAX's default multiplies float32 matrices in TF32 on recent NVIDIA GPUs and in bfloat16 passes on TPUs (on an H200,
# the tiny CLIP's zero-shot logits then differed from PyTorch's by up to 7e-4 relative); the tests compare float32
# against PyTorch, NumPy and hand-derived references, so they ask for full float32, as a user may (README "Precision").
# The CPU computes float32 in full either way. Set before JAX is imported, so the commands the tests start inherit it;
# and set in JAX below, in case a pytest plugin imported JAX first.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
# The suite runs JAX in several processes at once (README's `-n 2`, and the commands the tests start): on a GPU, each
# would take 75% of its memory as it starts (JAX's preallocation), leaving the next too little. Off unless set; it
# changes nothing on a CPU.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# JAX's persistent compilation cache, probed for (jax-ml/jax#38445) and shared for this run by its processes.
_CACHE_HIT_PROBE = """
import jaxood  # compiles with jaxood's XLA flags (XNNPACK's dots on a CPU), as the tests do
import jax, jax.numpy as jnp
hits = []
jax.monitoring.register_event_listener(lambda event, **_: hits.append(event == "/jax/compilation_cache/cache_hits"))
jax.jit(lambda x: jnp.tanh(x) @ x)(jnp.ones((64, 64))).block_until_ready()
print(any(hits))
"""


def _shared_compilation_cache() -> dict:
    """The variables that give JAX's persistent compilation cache a folder for this run, shared by its processes
    (pytest-xdist's workers inherit them, and the commands the tests start), or none. Most end-to-end tests compile
    the same steps (the small demo's train step and evaluation batch) in processes of their own: cached, each compiles
    once a run, and the suite took 13 min 5 s under `-n 2` here where it took 17 min 29 s. JAX caches the programs
    that took a second or more to compile. On some CPUs XLA refuses its own cached code on reload, with an error line
    on stderr each time (jax-ml/jax#38445), which the tests that read a command's stderr would see; so the cache is on
    only where a program compiled in one process is reloaded from it by the next, with nothing more on stderr. None
    where the user set a folder (theirs is used) or in a pytest-xdist worker (its run's controller decided)."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ or "PYTEST_XDIST_WORKER" in os.environ:
        return {}
    folder = tempfile.mkdtemp(prefix="jaxood-tests-compilation-cache-")
    # A size bound turns on the cache's file lock, so no process reads an entry while another writes it.
    cache = {"JAX_COMPILATION_CACHE_DIR": folder, "JAX_COMPILATION_CACHE_MAX_SIZE": str(4 << 30)}
    env = os.environ | cache | {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    probe = [sys.executable, "-c", _CACHE_HIT_PROBE]
    write = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=300)
    reload = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=300)
    if (write.stdout, reload.stdout, reload.stderr) != ("False\n", "True\n", write.stderr):
        shutil.rmtree(folder)
        return {}
    return cache


SHARED_COMPILATION_CACHE = _shared_compilation_cache()
os.environ.update(SHARED_COMPILATION_CACHE)


def pytest_unconfigure(config):
    if SHARED_COMPILATION_CACHE:
        shutil.rmtree(SHARED_COMPILATION_CACHE["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from jaxood.bench import VIT_B16  # noqa: E402

jax.config.update("jax_default_matmul_precision", os.environ["JAX_DEFAULT_MATMUL_PRECISION"])

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_image(path, seed, size=(40, 30), fmt=None):
    """A random RGB image of `size` (width, height), saved at `path`."""
    rng = np.random.RandomState(seed)
    Image.fromarray(rng.randint(0, 255, (size[1], size[0], 3), np.uint8)).save(path, format=fmt)


def this_platform():
    """The platform, the device kind and the compute dtype of `dtype` "auto" (bfloat16 on accelerators, float32 on
    CPU) that jaxood's logs and reports name for this process's devices: ("cpu", "cpu", "float32") on a CPU,
    ("gpu", "NVIDIA H200", "bfloat16") on an H200."""
    first = jax.devices()[0]
    return first.platform, first.device_kind, "float32" if first.platform == "cpu" else "bfloat16"


def config_module(name):
    """`configs/<name>.py`, loaded as a module (its `get_config`, and its `ARGS` where it has variants)."""
    spec = importlib.util.spec_from_file_location(f"{name}_config", os.path.join(ROOT, "configs", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_config(name, variant=None, /, **overrides):
    """`configs/<name>.py`'s `get_config(variant)` with dotted-key overrides (a `variant` key too)."""
    c = config_module(name).get_config(variant)
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        with node.ignore_type():  # a config file may hold any type, as a hand-written one does
            node[leaf] = value
    return c


TINY = dict(
    text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
    vision_config=dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    ),
    projection_dim=32,
)


def make_hf_clip(directory, config_kwargs, seed=0):
    """A random HF `CLIPModel`, saved to `directory`; returns the torch model."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(**config_kwargs)).eval()
    # HF initialises logit_scale to log(1/0.07); make it distinct to test it is carried over.
    with torch.no_grad():
        model.logit_scale.fill_(4.2)
    model.save_pretrained(directory)
    return model


def torch_optimizer(params, optim):
    """PyTorch's twin of a jaxood optimiser group of `optim`'s settings (`config.optim`) on `params`: SGD with
    momentum, weight decay added to the gradient, or AdamW with decoupled decay; at rate 1, which a test's schedule
    sets each step."""
    import torch

    if optim.name == "sgd":
        return torch.optim.SGD(params, lr=1.0, momentum=optim.momentum, weight_decay=optim.weight_decay)
    return torch.optim.AdamW(params, lr=1.0, betas=(optim.b1, optim.b2), weight_decay=optim.weight_decay)


@pytest.fixture(scope="session", autouse=True)
def _remove_tfds_empty_temp_folders():
    """TFDS leaves an empty `tmp*tfds` folder in the temp folder each time it opens a dataset that is not prepared
    (`DatasetInfo.initialize_from_bucket` makes it before finding its GCS lookup disabled); the suite's are removed,
    and only while empty."""
    pattern = os.path.join(tempfile.gettempdir(), "tmp*tfds")
    before = set(glob.glob(pattern))
    yield
    for folder in set(glob.glob(pattern)) - before:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """(directory, torch model) of a tiny random HF CLIP."""
    d = tmp_path_factory.mktemp("tiny_clip")
    return str(d), make_hf_clip(d, TINY)


@pytest.fixture(scope="session")
def b16_hf(tmp_path_factory):
    """(directory, torch model) of a random HF CLIP with the full ViT-B/16 shapes."""
    d = tmp_path_factory.mktemp("b16_clip")
    return str(d), make_hf_clip(d, VIT_B16)
