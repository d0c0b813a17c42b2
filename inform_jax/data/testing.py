"""Test helpers: a tiny word-level tokenizer saved as a Hugging Face tokenizer folder.

No hub access is needed: the vocabulary is built from the words (or whole texts) the test passes in, and the
folder loads with ``transformers.AutoTokenizer.from_pretrained(path)`` like any real checkpoint's tokenizer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3 in this order

# A small Llama-style template: bos once, a role tag per turn, eos closing every assistant turn, and an open
# assistant tag when a generation prompt is asked for. Its literal pieces are added to the vocabulary below.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|> {{ message['content'] }}"
    "{% if message['role'] == 'assistant' %} {{ eos_token }}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_TEMPLATE_TEXT = "<|system|> <|user|> <|assistant|>"


def _pieces(texts: Iterable[str]) -> list[str]:
    """Split texts exactly as the tokenizer will (whitespace pre-tokenizer), keeping first-seen order."""
    from tokenizers.pre_tokenizers import Whitespace

    pre = Whitespace()
    seen: dict[str, None] = {}
    for text in texts:
        for piece, _ in pre.pre_tokenize_str(text):
            seen.setdefault(piece, None)
    return list(seen)


def make_word_tokenizer(
    path: str | os.PathLike, words: Iterable[str], *, add_bos: bool = True, chat_template: bool = True
) -> str:
    """Build and save a word-level tokenizer folder at ``path``; returns ``str(path)``.

    Args:
      path: folder to write (created if missing).
      words: words or whole texts; each is split by the whitespace pre-tokenizer (``\\w+|[^\\w\\s]+``) and
        every piece becomes a vocabulary entry, so tests can pass the sentences they will tokenize.
      add_bos: prepend ``<bos>`` when encoding with ``add_special_tokens=True`` (as Llama tokenizers do).
      chat_template: attach :data:`CHAT_TEMPLATE` so ``apply_chat_template`` works.

    Ids: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3, then the pieces in first-seen order.
    """
    from tokenizers import Tokenizer, models, processors
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    pieces = [p for p in _pieces([*words, _TEMPLATE_TEXT]) if p not in SPECIAL_TOKENS]
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *pieces])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = Whitespace()
    if add_bos:
        core.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
        )
    specials = {"pad_token": PAD, "bos_token": BOS, "eos_token": EOS, "unk_token": UNK}
    tok = PreTrainedTokenizerFast(tokenizer_object=core, **specials)
    if chat_template:
        tok.chat_template = CHAT_TEMPLATE
    os.makedirs(path, exist_ok=True)
    tok.save_pretrained(str(path))
    return str(path)
