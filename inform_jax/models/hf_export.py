"""Reward models to and from transformers' `*ForSequenceClassification` folders (one label).

Export (`export_reward_model`) writes a folder that `transformers.AutoModelForSequenceClassification` loads and
whose `logits[:, 0]` is our reward:

- the backbone as for `save_pretrained`, the architecture named `<Family>ForSequenceClassification`, and the
  reward head as `score.weight` [1, D] (a linear map of the final-norm hidden state, no bias). The standard RM's
  head is that map; InfoRM with the linear decoder rewards `w_dec . (W_mu h)` in evaluation (the latent mean,
  decoded), which is the map `score = W_mu^T w_dec`; ODIN exports its quality head. A gated decoder is not
  linear in h and is refused; an ensemble is written as one folder per member plus `ensemble_export.json`.
- the tokenizer, changed in two ways without adding a token (so the embedding matrix keeps its size):
  * it appends the eos token to every text (a post-processor), because our reward models are trained and read at
    an appended eos: `tokenizer(text)` gives the ids our pipeline gives `prompt + response`;
  * its pad token is a token the vocabulary already has and that is not eos, because transformers reads the
    reward at the last position whose id is not `config.pad_token_id`: with pad == eos it would read before the
    eos. The pad comes from `pad_token` (the caller's), the tokenizer's own pad, a known pad name
    (`<|finetune_right_pad_id|>`, `<|padding|>`, `<pad>`, ...) or a reserved / unused special token; else the
    export refuses, naming `--pad-token`.

Import (`load_sequence_classifier`, reached through `load_reward_model`) reads such a folder (ours or anyone's) as
a standard RewardModel that reads the reward where transformers does (`RewardModel.read_pad_id`).
"""

from __future__ import annotations

import copy
import json
import os

import jax.numpy as jnp
import numpy as np
from flax import nnx

from inform_jax.models.hf_io import CheckpointError, from_pretrained, open_checkpoint, save_pretrained
from inform_jax.models.reward_model import EnsembleRewardModel, HeadConfig, RewardModel, load_reward_model
from inform_jax.models.sharding import to_host

ENSEMBLE_NOTE = "ensemble_export.json"
KNOWN_PADS = ("<|finetune_right_pad_id|>", "<|padding|>", "<pad>", "[PAD]", "<|pad|>", "<|endoftext|>")
RESERVED_MARKS = ("reserved", "unused")
SCORE = "score.weight"


class ExportError(ValueError):
    """A reward model or tokenizer that cannot be written as a transformers sequence classifier."""


# ---------------------------------------------------------------------------------------------- the score row


def score_vector(model: RewardModel) -> np.ndarray:
    """The reward as one linear map of the final-norm hidden state: w [D] float32 with reward = h . w.

    Refuses a head that is not linear in h (InfoRM's gated decoder) or that has a parameter besides the
    expected kernels (a bias: transformers' `score` has none)."""
    kind = model.head_config.kind
    if kind == "ib" and model.head_config.decoder != "linear":
        raise ExportError(
            "an InfoRM with the gated decoder cannot be exported: its reward is not linear in the hidden state, and "
            "a transformers score layer is one linear map (train with the linear decoder to export)"
        )
    expected = {"scalar": {"score.kernel"}, "ib": {"encoder.kernel", "decoder.kernel"},
                "odin": {"quality.kernel", "length.kernel"}}[kind]  # fmt: skip
    params = {".".join(map(str, k)): to_host(v[...]) for k, v in nnx.to_flat_state(nnx.state(model.head, nnx.Param))}
    extra = sorted(set(params) - expected)
    if extra:
        raise ExportError(f"the {kind!r} head has parameters {extra} besides its kernels; a transformers score layer "
                          "is one linear map without a bias, so this head cannot be exported")  # fmt: skip
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}  # fold in float64, store float32
    if kind == "scalar":
        w = params["score.kernel"][:, 0]
    elif kind == "odin":
        w = params["quality.kernel"][:, 0]  # the quality head is the reward used in RL
    else:
        latent = model.head.latent_dim  # encoder kernel [D, 2Z]: the mean is its first Z columns
        w = params["encoder.kernel"][:, :latent] @ params["decoder.kernel"][:, 0]
    return w.astype(np.float32)


def sequence_classifier_class(model: RewardModel) -> str:
    """transformers' *ForSequenceClassification class name for the backbone's family."""
    import transformers

    config = model.backbone.config
    name = config.family_module.CAUSAL_LM_CLASSES[config.model_type].replace("ForCausalLM", "ForSequenceClassification")
    if not hasattr(transformers, name):
        raise ExportError(f"transformers {transformers.__version__} has no {name}")
    return name


# ---------------------------------------------------------------------------------------------- the tokenizer


def _eos_ids(tokenizer, config) -> set[int]:
    ids = {tokenizer.eos_token_id}
    ids |= set(config.eos_token_id) if isinstance(config.eos_token_id, tuple) else {config.eos_token_id}
    return {i for i in ids if i is not None}


def choose_pad_token(tokenizer, config, requested: str | None = None) -> tuple[str, int]:
    """(pad token, its id): a token the vocabulary already has, inside the embedding matrix, and not eos, bos
    or unk (those stand inside texts, where the reward would then be read before them)."""
    vocab = tokenizer.get_vocab()
    barred = _eos_ids(tokenizer, config) | {tokenizer.bos_token_id, tokenizer.unk_token_id}

    def usable(token):
        token_id = vocab.get(token)
        return token_id is not None and token_id not in barred and token_id < config.vocab_size

    if requested is not None:
        if not usable(requested):
            why = "is not in the vocabulary" if requested not in vocab else "is the eos, bos or unk token, or lies " \
                  "outside the embedding matrix"  # fmt: skip
            raise ExportError(f"--pad-token {requested!r} {why}; name another token the vocabulary has")
        return requested, vocab[requested]
    specials = sorted(
        (t.content for i, t in tokenizer.added_tokens_decoder.items() if t.special),
        key=lambda token: vocab.get(token, 1 << 62),
    )
    reserved = [t for t in specials if any(mark in t.lower() for mark in RESERVED_MARKS)]
    for token in [tokenizer.pad_token, *KNOWN_PADS, *reserved]:
        if token is not None and usable(token):
            return token, vocab[token]
    raise ExportError(
        "the tokenizer has no pad token besides eos, bos or unk, and no known pad or reserved token; transformers "
        "reads the reward at the last non-pad token, so the pad must differ from eos. Pass one the vocabulary "
        "already has with --pad-token (pad_token=...): adding a token would resize the embeddings"
    )


def _append_eos(template: dict, eos: str, eos_id: int) -> None:
    """Make a TemplateProcessing (JSON) end each sequence ($A, $B) with eos, unless it does already."""
    for key in ("single", "pair"):
        out = []
        items = template[key]
        for n, item in enumerate(items):
            out.append(item)
            seq = item.get("Sequence")
            following = items[n + 1].get("SpecialToken", {}).get("id") if n + 1 < len(items) else None
            if seq is not None and following != eos:
                out.append({"SpecialToken": {"id": eos, "type_id": seq["type_id"]}})
        template[key] = out
    template.setdefault("special_tokens", {})[eos] = {"id": eos, "ids": [eos_id], "tokens": [eos]}


def _new_template(eos: str, eos_id: int) -> dict:
    template = {
        "type": "TemplateProcessing",
        "single": [{"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {},
    }
    _append_eos(template, eos, eos_id)
    return template


def make_tokenizer_append_eos(folder: str, eos: str, eos_id: int) -> None:
    """Edit a saved fast tokenizer (tokenizer.json, tokenizer_config.json) so `tokenizer(text)` ends with eos."""
    path = os.path.join(folder, "tokenizer.json")
    if not os.path.exists(path):
        raise ExportError(f"{folder}: no tokenizer.json (a fast tokenizer is needed to append eos on export)")
    with open(path) as f:
        data = json.load(f)
    processor = data.get("post_processor")
    if processor is None:
        data["post_processor"] = _new_template(eos, eos_id)
    elif processor["type"] == "TemplateProcessing":
        _append_eos(processor, eos, eos_id)
    elif processor["type"] == "Sequence":
        templates = [p for p in processor["processors"] if p["type"] == "TemplateProcessing"]
        for template in templates:
            _append_eos(template, eos, eos_id)
        if not templates:
            processor["processors"].append(_new_template(eos, eos_id))
    else:  # ByteLevel and the like only fix offsets: keep it, then append eos
        data["post_processor"] = {"type": "Sequence", "processors": [processor, _new_template(eos, eos_id)]}
    with open(path, "w") as f:
        json.dump(data, f, ensure_ascii=False, indent=2)
    config_path = os.path.join(folder, "tokenizer_config.json")
    with open(config_path) as f:
        config = json.load(f)
    if "add_bos_token" in config or "add_eos_token" in config:  # transformers rebuilds the template from these
        config["add_eos_token"] = True
        with open(config_path, "w") as f:
            json.dump(config, f, ensure_ascii=False, indent=2)


def export_tokenizer(tokenizer, config, out_dir: str, pad_token: str | None = None) -> int:
    """Write the tokenizer to `out_dir` with eos appended and a pad that is not eos; returns the pad id. Checked by
    loading it back: same vocabulary size, `tokenizer(text)` ends with one eos, the pad as chosen."""
    import transformers

    pad, pad_id = choose_pad_token(tokenizer, config, pad_token)
    size = len(tokenizer)
    tokenizer = copy.deepcopy(tokenizer)  # the caller's tokenizer keeps its pad
    tokenizer.pad_token = pad
    tokenizer.save_pretrained(out_dir)
    eos = tokenizer.eos_token
    if eos is None:
        raise ExportError("the tokenizer has no eos token; the reward is read at an appended eos")
    make_tokenizer_append_eos(out_dir, eos, tokenizer.eos_token_id)
    back = transformers.AutoTokenizer.from_pretrained(out_dir, local_files_only=True)
    ids = back("reward")["input_ids"]
    plain = back("reward", add_special_tokens=False)["input_ids"]
    problems = []
    if len(back) != size:
        problems.append(f"its size changed from {size} to {len(back)}")
    if ids[-1:] != [tokenizer.eos_token_id] or ids[-2:] == [tokenizer.eos_token_id] * 2 or plain[-1:] == ids[-1:]:
        problems.append(f"it does not append one eos ({ids} for 'reward')")
    if back.pad_token_id != pad_id:
        problems.append(f"its pad id is {back.pad_token_id}, not {pad_id}")
    if problems:
        raise ExportError(f"{out_dir}: the exported tokenizer is wrong: {'; '.join(problems)}")
    return pad_id


# ---------------------------------------------------------------------------------------------- export


def _export_one(model: RewardModel, tokenizer, out_dir: str, pad_token: str | None) -> None:
    w = score_vector(model)
    architecture = sequence_classifier_class(model)
    config = model.backbone.config
    if len(tokenizer) > config.vocab_size:
        raise ExportError(f"the tokenizer has {len(tokenizer)} tokens, the model's embeddings {config.vocab_size}")
    os.makedirs(out_dir, exist_ok=True)
    pad_id = export_tokenizer(tokenizer, config, out_dir, pad_token)
    score = w[None, :].astype(np.dtype(jnp.dtype(config.param_dtype)))  # [1, D], the file's one dtype
    save_pretrained(
        model.backbone, out_dir, architecture=architecture, extra_tensors={SCORE: score},
        config_updates={"num_labels": 1, "pad_token_id": pad_id},
    )  # fmt: skip


def export_reward_model(path_or_model, out_dir: str, *, tokenizer=None, pad_token: str | None = None) -> list[str]:
    """Write a reward model as transformers `*ForSequenceClassification` folder(s); returns the folders written.

    path_or_model: a reward model folder (ours or a sequence classifier) or a RewardModel / EnsembleRewardModel;
    tokenizer: a tokenizer or its folder (default: the reward model folder); pad_token: the pad token to use (one
    the vocabulary has, not eos). An ensemble writes `member_<i>/` per member and `ensemble_export.json`, which
    says how the members were aggregated: the aggregate itself is not one transformers model.
    """
    from inform_jax.data.tokenizer import load_tokenizer

    from_folder = isinstance(path_or_model, str | os.PathLike)
    model = load_reward_model(os.fspath(path_or_model)) if from_folder else path_or_model
    if tokenizer is None:
        if not from_folder:
            raise ExportError("give the tokenizer (or its folder) when exporting a model object")
        tokenizer = path_or_model
    load = (lambda: load_tokenizer(os.fspath(tokenizer))) if isinstance(tokenizer, str | os.PathLike) else None
    if not isinstance(model, EnsembleRewardModel):
        _export_one(model, load() if load else tokenizer, out_dir, pad_token)
        return [out_dir]
    folders = []
    for i in range(model.num_members):
        folder = os.path.join(out_dir, f"member_{i}")
        _export_one(model.member(i), load() if load else tokenizer, folder, pad_token)  # each folder loads alone
        folders.append(folder)
    note = {
        "members": [os.path.basename(f) for f in folders],
        "aggregation": model.aggregation,
        "uncertainty_coef": model.uncertainty_coef,
        "note": "each member_<i> folder is one transformers sequence classifier (logits[:, 0] is its reward); the "
        "ensemble's reward aggregates the members' rewards as 'aggregation' says (mean; min; mean - "
        "uncertainty_coef * variance for uwo) and is not itself one transformers model",
    }
    with open(os.path.join(out_dir, ENSEMBLE_NOTE), "w") as f:
        json.dump(note, f, indent=2)
    return folders


# ---------------------------------------------------------------------------------------------- import


def _read_config(path: str) -> dict | None:
    try:
        with open(os.path.join(path, "config.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_sequence_classifier(path: str) -> bool:
    """Whether the folder's config.json names a transformers *ForSequenceClassification architecture."""
    config = _read_config(path)
    architectures = (config or {}).get("architectures") or []
    return any(str(a).endswith("ForSequenceClassification") for a in architectures)


def load_sequence_classifier(path: str, *, dtype=jnp.float32, param_dtype=None, mesh=None, **runtime) -> RewardModel:
    """A transformers *ForSequenceClassification folder with one label as a standard RewardModel: the backbone
    through `from_pretrained`, `score.weight` [1, D] as the ScalarHead, the reward read at the last token that is
    not `config.pad_token_id` (transformers' rule; ours, the last attended token, when the config has no pad)."""
    config = _read_config(path)
    labels = config.get("num_labels", len(config.get("id2label") or {}) or 2)
    if labels != 1:
        raise CheckpointError(f"{path}/config.json: a sequence classifier with {labels} labels; a reward model "
                              "has one (num_labels 1)")  # fmt: skip
    backbone = from_pretrained(path, dtype=dtype, param_dtype=param_dtype, mesh=mesh, lm_head=False, **runtime)
    tensors = open_checkpoint(path)
    if SCORE not in tensors:
        raise CheckpointError(f"{path}: no {SCORE!r} tensor (the classifier's head)")
    if "score.bias" in tensors and np.any(np.asarray(tensors["score.bias"])):
        raise CheckpointError(f"{path}: the score layer has a bias, which a reward head here does not")
    score = np.asarray(tensors[SCORE], np.float32)
    if score.shape != (1, backbone.config.hidden_size):
        raise CheckpointError(f"{path}: {SCORE!r} has shape {score.shape}, expected (1, {backbone.config.hidden_size})")
    model = RewardModel(backbone, HeadConfig(kind="scalar"), rngs=nnx.Rngs(0), read_pad_id=config.get("pad_token_id"))
    model.head.score.kernel[...] = jnp.asarray(score.T)
    return model
