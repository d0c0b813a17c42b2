"""The synthetic RLHF world: a gold reward, spurious features a proxy can latch on to, exploits, samplers, and
its files in the formats the real loaders read."""

from inform_jax.world.config import WorldConfig
from inform_jax.world.world import SyntheticWorld

__all__ = ["SyntheticWorld", "WorldConfig"]
