"""Training: reward models (rm/), PPO and EPPO (ppo/), SFT, backbones, optimizers, ahead-of-time plans."""
