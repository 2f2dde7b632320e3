"""MCM and GL-MCM zero-shot scores from CLIP features (higher = more ID)."""

import jax
import jax.numpy as jnp


def normalize(x: jax.Array, axis: int = -1) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=axis, keepdims=True)


def mcm(image: jax.Array, text: jax.Array, temperature: float = 1.0) -> jax.Array:
    """`max_k softmax_k(cos(v, t_k) / T)` for image features (B, D) and class text features (C, D)."""
    cos = normalize(image) @ normalize(text).T
    return jnp.max(jax.nn.softmax(cos / temperature, axis=-1), axis=-1)


def local_mcm(local: jax.Array, text: jax.Array, temperature: float = 1.0) -> jax.Array:
    """`max_{patch, k} softmax_k(cos(p, t_k) / T)` for patch features (B, N, D)."""
    cos = normalize(local) @ normalize(text).T  # (B, N, C)
    return jnp.max(jax.nn.softmax(cos / temperature, axis=-1), axis=(-2, -1))


def gl_mcm(image: jax.Array, local: jax.Array, text: jax.Array, lambda_local: float = 1.0,
           temperature: float = 1.0) -> jax.Array:
    """GL-MCM: `MCM(global) + lambda_local * local MCM`."""
    return mcm(image, text, temperature) + lambda_local * local_mcm(local, text, temperature)
