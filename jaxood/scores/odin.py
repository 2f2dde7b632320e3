"""ODIN and i-ODIN: temperature scaling plus a small input perturbation (gradients with `jax.grad`).

Gradients are taken in normalised pixel space and the step is divided by the
per-channel std, as ODIN's code does. ODIN moves every element by
`eps * sign(grad log max softmax(f(x) / T)) / std_c`; i-ODIN moves only the one
(pixel, channel) with the largest |gradient| per image.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxood.data.preprocess import CLIP_STD
from jaxood.scores.logits import msp


def _grad_log_msp(logits_fn: Callable, images: jax.Array, temperature: float) -> jax.Array:
    def total(x):
        return jnp.sum(jnp.max(jax.nn.log_softmax(logits_fn(x) / temperature, axis=-1), axis=-1))

    return jax.grad(total)(images)


def odin(
    logits_fn: Callable, images: jax.Array, temperature: float = 1000.0, eps: float = 0.0014, std=CLIP_STD
) -> jax.Array:
    """ODIN score of NHWC images; `logits_fn(images) -> (B, C)`."""
    g = _grad_log_msp(logits_fn, images, temperature)
    perturbed = images + eps * jnp.sign(g) / jnp.asarray(std, images.dtype)
    return msp(logits_fn(perturbed), temperature)


def iodin(
    logits_fn: Callable, images: jax.Array, temperature: float = 1000.0, eps: float = 0.0014, std=CLIP_STD
) -> jax.Array:
    """i-ODIN: the ODIN step applied only to the element with the largest |gradient| of each image."""
    g = _grad_log_msp(logits_fn, images, temperature)
    b = images.shape[0]
    flat = g.reshape(b, -1)
    top = jnp.argmax(jnp.abs(flat), axis=-1)
    step = eps * jnp.sign(flat[jnp.arange(b), top]) / jnp.asarray(std, images.dtype)[top % images.shape[-1]]
    delta = jnp.zeros_like(flat).at[jnp.arange(b), top].set(step)
    return msp(logits_fn(images + delta.reshape(images.shape)), temperature)
