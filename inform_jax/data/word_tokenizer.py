"""A word-level Hugging Face tokenizer for small closed vocabularies (the synthetic world, tests).

One word is one token; the pre-tokenizer is tokenizers' ``Whitespace`` (``\\w+|[^\\w\\s]+``), so "Human:"
becomes "Human" ":". Special tokens come first with fixed ids: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2,
``<unk>`` 3. Encoding with special tokens prepends ``<bos>`` (as Llama tokenizers do); ``<eos>`` is left to
the caller, who knows where a response ends. The folder loads offline with
``transformers.AutoTokenizer.from_pretrained(path)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)


def build_word_tokenizer(
    words: Iterable[str], path: str | os.PathLike, chat_template: str | None = None, *, add_bos: bool = True
) -> str:
    """Build a WordLevel tokenizer over ``words`` and save it with ``save_pretrained`` at ``path``.

    Args:
      words: the vocabulary, one token each, in id order after the special tokens (special tokens among them
        are skipped, duplicates keep their first id). A word the pre-tokenizer would split (e.g. "a-b") is
        rejected, since it could never be produced as one token.
      path: folder to write (created if missing).
      chat_template: optional Jinja chat template stored with the tokenizer.
      add_bos: prepend ``<bos>`` when encoding with ``add_special_tokens=True``.

    Returns:
      ``str(path)``.
    """
    from tokenizers import Tokenizer, models, processors
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    pre_tokenizer = Whitespace()
    ordered = [w for w in dict.fromkeys(words) if w not in SPECIAL_TOKENS]
    for word in ordered:
        pieces = [piece for piece, _ in pre_tokenizer.pre_tokenize_str(word)]
        if pieces != [word]:
            raise ValueError(f"vocabulary word {word!r} is not one token for the whitespace pre-tokenizer")
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *ordered])}

    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizer
    if add_bos:
        core.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    os.makedirs(path, exist_ok=True)
    tokenizer.save_pretrained(str(path))
    return str(path)
