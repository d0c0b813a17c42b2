"""inform-jax."""
