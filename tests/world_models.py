"""A synthetic world's files with a tiny random SFT policy and InfoRM reward model saved beside them (the PPO
command tests' setup)."""

from flax import nnx

from inform_jax.data.tokenizer import load_tokenizer
from inform_jax.models import CausalLM, DecoderConfig, save_pretrained
from inform_jax.models.reward_model import HeadConfig, RewardModel, save_reward_model
from inform_jax.world import SyntheticWorld


def world_sft_and_rm(root, *, n_train: int, n_test: int, hidden_size: int, initializer_range: float = 0.02):
    """World files under root/world (32 training prompts), the SFT policy with its tokenizer in root/sft, the
    reward model in root/rm. Returns (the world's files, the vocabulary size)."""
    files = SyntheticWorld().write(root / "world", n_train=n_train, n_test=n_test, n_sft=8, n_prompts_train=32,
                                   n_prompts_test=8)  # fmt: skip
    tokenizer = load_tokenizer(files["tokenizer"])
    config = DecoderConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_layers=2,
        num_heads=4, num_kv_heads=4, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        initializer_range=initializer_range,
    )  # fmt: skip
    save_pretrained(CausalLM(config, rngs=nnx.Rngs(0)), str(root / "sft"))
    tokenizer.save_pretrained(str(root / "sft"))
    reward_model = RewardModel.create(config, HeadConfig(kind="ib", latent_dim=8), rngs=nnx.Rngs(1))
    save_reward_model(reward_model, str(root / "rm"))
    return files, len(tokenizer)
