"""Tokenizer loading from a local folder or a Hugging Face Hub id (its cached snapshot)."""

from __future__ import annotations


def load_tokenizer(path: str):
    """The tokenizer saved in a folder (or a Hub id's snapshot, :func:`inform_jax.hub.resolve_path`); a clear error
    when the folder has none (e.g. a reward model folder written without one)."""
    import os

    import transformers

    from inform_jax.hub import resolve_path

    path = resolve_path(path, what="tokenizer folder")
    if not os.path.exists(os.path.join(path, "tokenizer_config.json")):
        raise FileNotFoundError(f"{path}: no tokenizer files; pass the tokenizer folder (--tokenizer)")
    return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
