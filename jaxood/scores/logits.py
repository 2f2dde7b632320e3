"""Post-hoc scores from classifier logits (higher = more ID)."""

import jax
import jax.numpy as jnp


def msp(logits: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Maximum softmax probability."""
    return jnp.max(jax.nn.softmax(logits / temperature, axis=-1), axis=-1)


def predicted_class(logits: jax.Array) -> jax.Array:
    """Each row's top class; -1 (no class, so wrong in the ID accuracy) for a row with a NaN logit, whose argmax
    is the first NaN's class: all-NaN rows counted as right for every image of class 0."""
    return jnp.where(jnp.isnan(logits).any(-1), -1, jnp.argmax(logits, -1))


def max_logit(logits: jax.Array) -> jax.Array:
    return jnp.max(logits, axis=-1)


def energy(logits: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Negative free energy `T * logsumexp(logits / T)`."""
    return temperature * jax.nn.logsumexp(logits / temperature, axis=-1)
