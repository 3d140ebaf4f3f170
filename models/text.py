"""Text side of TIRG's model (methods reference A.1): a vocabulary built from the training texts and
an LSTM text encoder. TIRG: Vo et al., CVPR 2019, https://arxiv.org/abs/1812.07119 (`text_model.py`).

`Tokenizer` is what every text side offers the feed and the evaluation: the Vocabulary here, CLIP's
BPE tokenizer (models/clip.py), and the cached text features of frozen encoders (study/feature_cache.py).
"""
from __future__ import annotations

import string
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

__all__ = ["UNKNOWN", "Tokenizer", "Vocabulary", "TextEncoder", "tokenize"]

UNKNOWN = "<unk>"
_PUNCTUATION = str.maketrans("", "", string.punctuation)


class Tokenizer(Protocol):
    """Texts -> what the text encoder reads, and what a checkpoint stores to rebuild it."""

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """-> the text encoder's input (B, L) and lengths (B,) long >= 1: token ids, or for the cached
        features of frozen encoders the (B, D) float features themselves (models/model.py encode_text)."""
        ...

    def to_list(self) -> list[str]: ...

    def __len__(self) -> int: ...


def tokenize(text: str) -> list[str]:
    """ASCII-fold, lower-case, drop punctuation (TIRG removes it, so "top-left" -> "topleft"), split."""
    folded = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    return folded.lower().translate(_PUNCTUATION).split()


class Vocabulary:
    """Words -> ids; id 0 is the unknown word, so a test-time word never seen in training maps to 0."""

    def __init__(self, words: Sequence[str] = ()) -> None:
        self._words = [UNKNOWN, *words]
        self._ids = {word: i for i, word in enumerate(self._words)}
        if len(self._ids) != len(self._words):
            raise ValueError("Vocabulary words must be distinct")

    @classmethod
    def build(cls, texts: Iterable[str]) -> Vocabulary:
        # Sorted, so the ids do not depend on the order in which a dataset lists its texts.
        return cls(sorted({word for text in texts for word in tokenize(text)} - {UNKNOWN}))

    def __len__(self) -> int:
        return len(self._words)

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """-> tokens (B, L) long padded with 0, lengths (B,) long; an empty text becomes one unknown word."""
        ids = [[self._ids.get(word, 0) for word in tokenize(text)] or [0] for text in texts]
        lengths = torch.tensor([len(row) for row in ids], dtype=torch.long)  # (B,)
        tokens = torch.zeros(len(ids), int(lengths.max()) if ids else 1, dtype=torch.long)  # (B, L)
        for i, row in enumerate(ids):
            tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return tokens, lengths

    def to_list(self) -> list[str]:
        """Every word in id order (index 0 is the unknown word): what a checkpoint stores."""
        return list(self._words)

    @classmethod
    def from_list(cls, words: Sequence[str]) -> Vocabulary:
        if not words or words[0] != UNKNOWN:
            raise ValueError(f"a stored vocabulary starts with {UNKNOWN!r} (id 0); got {list(words[:3])!r}...")
        return cls(words[1:])


class TextEncoder(nn.Module):
    """embedding (512) -> 1-layer LSTM (hidden 512) -> state at the last real token -> Dropout(0.1) -> Linear to D."""

    def __init__(self, vocab_size: int, embed_dim: int, *, word_dim: int = 512, hidden_dim: int = 512) -> None:
        super().__init__()
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1 (id 0 is the unknown word), got {vocab_size}")
        self.embedding = nn.Embedding(vocab_size, word_dim)
        self.lstm = nn.LSTM(word_dim, hidden_dim, num_layers=1, batch_first=True)
        self.dropout = nn.Dropout(0.1)
        self.fc = nn.Linear(hidden_dim, embed_dim)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:  # tokens (B, L), lengths (B,)
        states, _ = self.lstm(self.embedding(tokens))  # (B, L, H)
        # A forward LSTM's output at step len-1 has not seen the padding after it, so no packing is needed.
        last = (lengths.to(tokens.device) - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, states.shape[2])
        final = states.gather(1, last).squeeze(1)  # (B, H)
        return self.fc(self.dropout(final))  # (B, D)
