"""Dynamic loss scaling for float16 training (`config.loss_scale = "dynamic"`), as PyTorch's `GradScaler`, with
which the released SOT-GLP code trains under float16 autocast.

float16 holds no magnitude below 6e-8, so a backward pass in float16 rounds smaller gradients to 0. The train step
multiplies the loss by a scale before its backward pass and divides the gradients by it after, in float32. A step
whose gradient is then not finite (the scaled backward overflowed float16's 65504) is skipped and the scale halved;
after 2000 finite steps in a row the scale is doubled. These are GradScaler's defaults, and its first scale, 2**16.

A skipped step leaves the parameters and the optimiser's state as they were, AdamW's count for its bias correction
included, as PyTorch's Adam does not count a step GradScaler skips. Only the schedules' counts advance, so the
learning rate stays on the trainer's step, as PyTorch's scheduler steps at a skipped step too.

Unlike GradScaler's, the scale does not go below 1: a non-finite gradient at scale 1 is not the scale's overflow,
and it stops the run as any NaN does (jaxood.train's NaN guard) instead of skipping every step, unsaid.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

CHOICES = ("none", "dynamic")
FIRST_SCALE, GROWTH_INTERVAL = 2.0**16, 2000


def init(choice: str) -> dict | None:
    """The scaler's state for `config.loss_scale`: {"scale", "good": finite steps in a row}, or None (no scaling)."""
    if choice == "none":
        return None
    return {"scale": jnp.asarray(FIRST_SCALE, jnp.float32), "good": jnp.asarray(0, jnp.int32)}


def scaled(loss: jax.Array, scaler: dict) -> jax.Array:
    """The loss the backward pass starts from, in float32 as the scale is (a float16 loss times 2**16 overflows)."""
    return loss * scaler["scale"]


def unscaled(grads: Any, scaler: dict) -> Any:
    return jax.tree.map(lambda g: g / scaler["scale"].astype(g.dtype), grads)


def update(scaler: dict, finite: jax.Array) -> tuple[dict, jax.Array]:
    """The scaler after a step whose unscaled gradient is `finite` or not, and whether that step is skipped (its
    gradient not finite at a scale above 1)."""
    scale = scaler["scale"]
    skip = ~finite & (scale > 1)
    good = jnp.where(finite, scaler["good"] + 1, 0)
    grow = good >= GROWTH_INTERVAL
    scale = jnp.where(finite, jnp.where(grow, scale * 2, scale), jnp.maximum(scale / 2, 1.0))
    return {"scale": scale, "good": jnp.where(grow, 0, good)}, skip


def unless_skipped(skip: jax.Array, new: Any, old: Any) -> Any:
    """`new` parameters or optimiser state after a step, or where the step is skipped `old`, but for the schedules'
    states (optax's `ScaleByScheduleState`: the learning rate's count), which advance at every step."""

    def is_schedule(x) -> bool:
        return isinstance(x, optax.ScaleByScheduleState)

    return jax.tree.map(lambda n, o: n if is_schedule(n) else jnp.where(skip, o, n), new, old, is_leaf=is_schedule)
