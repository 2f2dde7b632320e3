"""jaxood: CLIP-based out-of-distribution detection in JAX/Flax."""

__version__ = "0.1.0"
