"""A synthetic RLHF world small enough for a laptop, in which a proxy reward model can be hacked.

Prompts ask for something checkable ("name three animals", "count from four to six", "what color is the
lime ?"); the gold reward scores what was asked and dislikes needless words and caution; spurious features
(length, over-cautious filler after the EPPO talk's hacking example, repetition) can be made to correlate
with the preferred side of preference pairs, so a proxy reward model trained on them learns a shortcut that
RL can exploit: proxy reward keeps rising while gold reward rises, then falls.
``WorldConfig.arm`` chooses the exploit that is planted (the lab's exploit arms): the repetition exploit above
(default), nothing, or marker tokens that are label-independent (nuisance), co-occur with the gold-preferred side
before label noise (shortcut_a) or track the labelled side after it (shortcut_b).

Scores exist in two forms that agree: on text (``gold_reward_text``...) and on token ids in JAX
(``gold_reward_ids``..., jittable, for a reward function inside a jitted PPO loop). The rules and formulas
are in :class:`WorldConfig` and ``inform_jax.world.scoring``; file formats in ``inform_jax.world.files``.

Example::

    world = SyntheticWorld()
    rng = np.random.default_rng(0)
    pairs = world.preference_pairs(rng, 1000, label_noise=0.25, spurious_correlation=0.8)
    world.write("/tmp/world", n_train=4000, n_test=500)
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from inform_jax.data.word_tokenizer import build_word_tokenizer
from inform_jax.world.config import BEHAVIOUR_NAMES, TASK_NAMES, WorldConfig
from inform_jax.world.files import HH_CHAT_TEMPLATE, write_world
from inform_jax.world.jax_scorer import IdScores, make_id_scorer
from inform_jax.world.markers import insert_marker_ids, insert_marker_text
from inform_jax.world.pairs import preference_pairs, sft_demonstrations
from inform_jax.world.responses import generate_response, sample_prompt
from inform_jax.world.scoring import Scores, TaskSpec, known_words, parse_prompt, score_words
from inform_jax.world.vocab import PAD, UNK, build_tables, vocabulary

__all__ = [
    "BEHAVIOUR_NAMES",
    "TASK_NAMES",
    "IdScores",
    "Scores",
    "SyntheticWorld",
    "TaskSpec",
    "WorldConfig",
]


class SyntheticWorld:
    """Vocabulary, samplers, scores (text and JAX) and file writer of the synthetic world.

    Token ids are positions in :attr:`vocabulary` (``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3), the
    same ids the saved tokenizer gives. The marker arms (``config.arm``) append ``vocab.MARKER_WORDS`` to it.
    """

    def __init__(self, config: WorldConfig | None = None):
        self.config = config or WorldConfig()
        self.vocabulary: tuple[str, ...] = vocabulary(markers=self.config.has_markers)
        self.tables = build_tables(self.vocabulary)
        self._ids = {w: i for i, w in enumerate(self.vocabulary)}
        self._known = frozenset(self.vocabulary)
        self._score_ids = jax.jit(self.id_scorer())

    # ---------------------------------------------------------------------------------------------- tokens

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def token_id(self, word: str) -> int:
        """Id of a word (``<unk>``'s id for unknown words)."""
        return self._ids.get(word, self._ids[UNK])

    def words(self, text: str) -> list[str]:
        """Tokens of ``text`` as the tokenizer splits it, unknown ones as ``<unk>``."""
        return known_words(text, self._known)

    def encode(self, texts: list[str], length: int, *, truncate: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Texts -> ``(ids [N, length] int32, mask [N, length] int32)``, left-aligned, padded with ``<pad>``.

        No special tokens are added. A text longer than ``length`` raises unless ``truncate`` (keep the start).
        """
        ids = np.full((len(texts), length), self._ids[PAD], np.int32)
        mask = np.zeros((len(texts), length), np.int32)
        for row, text in enumerate(texts):
            tokens = [self._ids[w] for w in self.words(text)]
            if len(tokens) > length and not truncate:
                raise ValueError(f"text {row} has {len(tokens)} tokens, more than length={length}: {text!r}")
            tokens = tokens[:length]
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return ids, mask

    def decode(self, ids: np.ndarray, mask: np.ndarray | None = None) -> list[str]:
        """``ids [N, L]`` (and ``mask [N, L]``) -> texts of the masked tokens, special tokens included.

        Ids outside the vocabulary become ``<unk>``. Text scores of the result equal id scores of the input.
        """
        ids = np.asarray(ids)
        mask = np.ones_like(ids, dtype=bool) if mask is None else np.asarray(mask).astype(bool)
        return [
            " ".join(self.vocabulary[i] if 0 <= i < self.vocab_size else UNK for i in row[keep].tolist())
            for row, keep in zip(ids, mask, strict=True)
        ]

    def save_tokenizer(self, path: str | os.PathLike) -> str:
        """Save the world's word tokenizer (with the HH-style chat template) at ``path``; returns the path."""
        return build_word_tokenizer(self.vocabulary, path, chat_template=HH_CHAT_TEMPLATE)

    # ------------------------------------------------------------------------------------------ text scores

    def parse_prompt(self, prompt: str) -> TaskSpec:
        """What a prompt asks for (see ``inform_jax.world.scoring`` for the rules)."""
        return parse_prompt(self.words(prompt))

    def score_text(self, prompt: str, response: str) -> Scores:
        """Gold reward, spurious score and hacking label of one response."""
        return score_words(self.words(prompt), self.words(response), self.config)

    def gold_reward_text(self, prompt: str, response: str) -> float:
        """Gold reward in [-1, 1]: 1 for exactly the requested items and nothing else."""
        return self.score_text(prompt, response).gold

    def spurious_score_text(self, response: str) -> float:
        """Spurious score in [0, 1] (prompt-free): length, filler fraction, repetition fraction."""
        return self.score_text("", response).spurious

    def hacked_text(self, prompt: str, response: str) -> bool:
        """Whether the response is a hack: high spurious score and low gold reward (shortcut arms: a marker)."""
        return self.score_text(prompt, response).hacked

    # --------------------------------------------------------------------------------------------- markers

    def insert_marker(self, response: str, rng: np.random.Generator, *, at_end: bool = False) -> str:
        """``response`` with one marker word inserted at a random position (``at_end``: after its last scored
        word), as the marker arms' samplers insert it; for measuring a reward's sensitivity to the marker."""
        self._need_markers()
        return insert_marker_text(response, rng, at_end=at_end)

    def insert_marker_ids(
        self, ids: np.ndarray, mask: np.ndarray, rng: np.random.Generator, *, at_end: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Responses ``ids``, ``mask`` [B, T] -> [B, T + 1] with one marker token inserted per row, as
        :meth:`insert_marker` inserts it (see ``inform_jax.world.markers.insert_marker_ids``)."""
        self._need_markers()
        return insert_marker_ids(ids, mask, rng, self.vocabulary, at_end=at_end)

    def _need_markers(self) -> None:
        if not self.config.has_markers:
            raise ValueError(f"arm {self.config.arm!r} has no marker tokens; use a marker arm to insert them")

    # ------------------------------------------------------------------------------------------- id scores

    def id_scorer(self):
        """The pure, unjitted ``score(prompt_ids, prompt_mask, response_ids, response_mask) -> IdScores``."""
        return make_id_scorer(self.tables, self.vocabulary, self.config)

    def score_ids(self, prompt_ids, prompt_mask, response_ids, response_mask) -> IdScores:
        """Jitted scores of a batch: prompt [B, P], response [B, T] ids and masks -> IdScores of [B] arrays."""
        return self._score_ids(prompt_ids, prompt_mask, response_ids, response_mask)

    def gold_reward_ids(self, prompt_ids, prompt_mask, response_ids, response_mask) -> jax.Array:
        """Gold reward [B] float32 of responses [B, T] to prompts [B, P] (ids and 0/1 masks)."""
        return self.score_ids(prompt_ids, prompt_mask, response_ids, response_mask).gold

    def spurious_score_ids(self, response_ids, response_mask) -> jax.Array:
        """Spurious score [B] float32 of responses [B, T] (prompt-free)."""
        empty = np.zeros((response_ids.shape[0], 1), np.int32)
        return self.score_ids(empty, empty, response_ids, response_mask).spurious

    def hacked_ids(self, prompt_ids, prompt_mask, response_ids, response_mask) -> jax.Array:
        """Hacking label [B] bool of responses [B, T] to prompts [B, P]."""
        return self.score_ids(prompt_ids, prompt_mask, response_ids, response_mask).hacked

    # -------------------------------------------------------------------------------------------- sampling

    def sample_prompts(self, rng: np.random.Generator, n: int) -> list[str]:
        """``n`` prompts drawn i.i.d. (tasks by ``config.task_probs``)."""
        return [sample_prompt(rng, self.config)[1] for _ in range(n)]

    def generate_response(self, rng: np.random.Generator, prompt: str, behaviour: str) -> str:
        """A response of one of :data:`BEHAVIOUR_NAMES` to ``prompt``."""
        return generate_response(rng, self.parse_prompt(prompt), behaviour, self.config)

    def sft_demonstrations(self, rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
        """``n`` (prompt, response) demonstrations: mostly correct and concise (``config.sft_behaviour_probs``)."""
        return sft_demonstrations(rng, n, self.config, self.parse_prompt)

    def preference_pairs(
        self,
        rng: np.random.Generator,
        n: int,
        label_noise: float | None = None,
        spurious_correlation: float | None = None,
        *,
        arm: str | None = None,
    ) -> list[dict[str, Any]]:
        """``n`` gold-labelled pairs with label noise and spurious correlation (None: the config's defaults; the
        spurious correlation's is ``config.pair_spurious_correlation``: none outside the repetition arm).

        Each row: prompt, task, chosen, rejected, gold_/spurious_/hacked_/behaviour_ chosen and rejected (as
        labelled, so a flipped row has gold_chosen < gold_rejected), flipped; in the marker arms also
        marker_chosen and marker_rejected. ``arm``: another arm's marker placement (None: the config's); the
        world writes its balanced test pairs with the nuisance arm's.
        """
        noise = self.config.label_noise if label_noise is None else label_noise
        rho = self.config.pair_spurious_correlation if spurious_correlation is None else spurious_correlation
        return preference_pairs(rng, n, self.config, self.parse_prompt, self.score_text, noise, rho, arm)

    # ------------------------------------------------------------------------------------------------ files

    def write(
        self,
        out_dir: str | os.PathLike,
        n_train: int = 4000,
        n_test: int = 500,
        *,
        n_sft: int = 4000,
        n_prompts_train: int = 1000,
        n_prompts_test: int = 200,
        label_noise: float | None = None,
        spurious_correlation: float | None = None,
        seed: int = 0,
    ) -> dict[str, str]:
        """Write the world's files (see ``inform_jax.world.files``) under ``out_dir``; returns ``{name: path}``.

        Test pairs are noise-free; ``label_noise`` and ``spurious_correlation`` (None: config defaults, see
        :meth:`preference_pairs`) shape the training pairs. The config's arm shapes every file; world.json records
        it. Deterministic given ``seed``.
        """
        return write_world(
            self,
            out_dir,
            n_sft=n_sft,
            n_train=n_train,
            n_test=n_test,
            n_prompts_train=n_prompts_train,
            n_prompts_test=n_prompts_test,
            label_noise=self.config.label_noise if label_noise is None else label_noise,
            spurious_correlation=(
                self.config.pair_spurious_correlation if spurious_correlation is None else spurious_correlation
            ),
            seed=seed,
        )
