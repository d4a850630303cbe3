"""bil_jax: the BiLevel image-to-image translation paradigm in JAX/Flax."""
