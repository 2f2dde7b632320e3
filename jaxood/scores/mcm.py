"""MCM and GL-MCM from CLIP cosines (higher = more ID).

Both take cosines, not features: every caller has already computed the
image-class cosines for its prediction, and scores them without a second matmul.
"""

import jax
import jax.numpy as jnp


def normalize(x: jax.Array, axis: int = -1) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=axis, keepdims=True)


def mcm(cos: jax.Array, temperature: float = 1.0) -> jax.Array:
    """`max softmax_k(cos / T)`: softmax over the class axis (last), max over it and every axis after the batch's.

    Global cosines `(B, C)` give MCM; patch cosines `(B, N, C)` give the local
    term of GL-MCM, `max_{patch, k} softmax_k(cos(p, t_k) / T)`.
    """
    p = jax.nn.softmax(cos / temperature, axis=-1)
    return jnp.max(p.reshape(p.shape[0], -1), axis=-1)


def gl_mcm(cos: jax.Array, local_cos: jax.Array, lambda_local: float = 1.0, temperature: float = 1.0) -> jax.Array:
    """GL-MCM: `MCM(cos (B, C)) + lambda_local * MCM(local_cos (B, N, C))`."""
    return mcm(cos, temperature) + lambda_local * mcm(local_cos, temperature)
