"""MCM and GL-MCM zero-shot scores from CLIP features (higher = more ID)."""

import jax
import jax.numpy as jnp


def normalize(x: jax.Array, axis: int = -1) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=axis, keepdims=True)


def max_softmax(cos: jax.Array, temperature: float = 1.0) -> jax.Array:
    """`max softmax_k(cos / T)`: softmax over the class axis (last), max over it and every axis after the batch's."""
    p = jax.nn.softmax(cos / temperature, axis=-1)
    return jnp.max(p.reshape(p.shape[0], -1), axis=-1)


def mcm(image: jax.Array, text: jax.Array, temperature: float = 1.0) -> jax.Array:
    """`max_k softmax_k(cos(v, t_k) / T)` for image features (B, D) and class text features (C, D)."""
    return max_softmax(normalize(image) @ normalize(text).T, temperature)


def local_mcm(local: jax.Array, text: jax.Array, temperature: float = 1.0) -> jax.Array:
    """`max_{patch, k} softmax_k(cos(p, t_k) / T)` for patch features (B, N, D)."""
    return max_softmax(normalize(local) @ normalize(text).T, temperature)  # cos (B, N, C)


def gl_mcm(
    image: jax.Array, local: jax.Array, text: jax.Array, lambda_local: float = 1.0, temperature: float = 1.0
) -> jax.Array:
    """GL-MCM: `MCM(global) + lambda_local * local MCM`."""
    return mcm(image, text, temperature) + lambda_local * local_mcm(local, text, temperature)
