"""Pure jnp loss functions (no Flax import): jittable, vmappable, differentiable."""
