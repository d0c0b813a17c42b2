"""Tokenizer loading from a local folder."""

from __future__ import annotations


def load_tokenizer(path: str):
    """The tokenizer saved in a local folder; a clear error when the folder has none (e.g. a reward model folder
    written without one)."""
    import os

    import transformers

    if not os.path.exists(os.path.join(path, "tokenizer_config.json")):
        raise FileNotFoundError(f"{path}: no tokenizer files; pass the tokenizer folder (--tokenizer)")
    return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
