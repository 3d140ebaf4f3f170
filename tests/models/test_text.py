from __future__ import annotations

import pytest
import torch

from models.text import UNKNOWN, TextEncoder, Vocabulary, tokenize


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("Add a RED circle, to top-left!") == ["add", "a", "red", "circle", "to", "topleft"]


def test_vocabulary_ids_and_unknown_words():
    vocab = Vocabulary.build(["red circle", "blue circle"])
    assert vocab.to_list() == [UNKNOWN, "blue", "circle", "red"]
    assert len(vocab) == 4
    tokens, lengths = vocab.encode(["Red circle", "green blob circle", ""])
    assert tokens.tolist() == [[3, 2, 0], [0, 0, 2], [0, 0, 0]]
    assert lengths.tolist() == [2, 3, 1]  # an empty text is one unknown word
    assert tokens.dtype == lengths.dtype == torch.long


def test_vocabulary_round_trips_through_a_list():
    vocab = Vocabulary.build(["make small gray object large"])
    again = Vocabulary.from_list(vocab.to_list())
    assert again.to_list() == vocab.to_list()
    assert torch.equal(again.encode(["gray object"])[0], vocab.encode(["gray object"])[0])
    with pytest.raises(ValueError, match="starts with"):
        Vocabulary.from_list(["gray", UNKNOWN])


def test_text_encoder_reads_the_last_real_token_not_the_padding():
    vocab = Vocabulary.build(["add red circle to the top"])
    encoder = TextEncoder(len(vocab), 16, word_dim=8, hidden_dim=8).eval()
    short, short_len = vocab.encode(["add red"])
    batch, lengths = vocab.encode(["add red", "add red circle to the top"])  # "add red" padded to 6
    alone = encoder(short, short_len)  # (1, 16)
    padded = encoder(batch, lengths)  # (2, 16)
    assert padded.shape == (2, 16)
    assert torch.allclose(alone[0], padded[0], atol=1e-6)
    assert not torch.allclose(padded[0], padded[1])


def test_text_encoder_default_sizes_follow_tirg():
    encoder = TextEncoder(5, 32)
    assert encoder.embedding.embedding_dim == 512 and encoder.lstm.hidden_size == 512
    assert encoder.lstm.num_layers == 1 and encoder.dropout.p == 0.1 and encoder.fc.out_features == 32
