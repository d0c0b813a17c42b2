"""inform-jax: reward models that resist reward hacking (InfoRM, CSI, EPPO, reward decomposition) in JAX."""

__version__ = "0.1.0"
