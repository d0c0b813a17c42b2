"""Test helpers: a tiny word-level tokenizer saved as a Hugging Face tokenizer folder.

No hub access is needed: the vocabulary is built from the words (or whole texts) the test passes in, and the
folder loads with ``transformers.AutoTokenizer.from_pretrained(path)`` like any real checkpoint's tokenizer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from inform_jax.data.word_tokenizer import build_word_tokenizer

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
    pieces = _pieces([*words, _TEMPLATE_TEXT])
    return build_word_tokenizer(pieces, path, CHAT_TEMPLATE if chat_template else None, add_bos=add_bos)
