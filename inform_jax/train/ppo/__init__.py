"""PPO and EPPO: the configuration, the trainer, training-time detection, the gold reward logged beside."""
