"""The CLIP encoders of models/clip.py: every registered one builds with the network blocked, embeds
images and texts at its width and back-propagates into both towers; the pieces around open_clip (the
input re-normalisation, the cut text sequence, the tokenizer's lengths, weights files) are checked
against open_clip itself or by hand on clip_tiny."""
from __future__ import annotations

import socket

import open_clip
import pytest
import torch
import torch.nn.functional as F

from models.clip import CLIP_MEAN, CLIP_STD, ClipEncoders, ClipTextTower, ClipTinyEncoders, ClipTokenizer
from models.encoders import ENCODERS, IMAGENET_MEAN, IMAGENET_STD, encoder_class
from models.model import CirModel, ModelConfig

CLIP_NAMES = [name for name in ENCODERS.names() if issubclass(encoder_class(name), ClipEncoders)]
TEXTS = ["make the red cube small", "add", ""]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_the_registered_architectures_include_rn50_and_vit_b32() -> None:
    assert {"clip_rn50", "clip_vit_b32", "clip_tiny"} <= set(CLIP_NAMES)


@pytest.mark.parametrize("name", CLIP_NAMES)
def test_every_clip_encoder_builds_offline_embeds_and_back_propagates(name: str, offline: None) -> None:
    torch.manual_seed(0)
    cls = encoder_class(name)
    encoders = cls(embed_dim=16)  # embed_dim is ignored: CLIP has its own width
    size = encoders.image.input.image_size
    assert encoders.width == cls.fixed_width == cls.feature_width(16)
    images = torch.randn(1, 3, size, size)
    features = encoders.image(images)
    assert features.vector.shape == (1, cls.fixed_width)
    assert features.last_map.shape[:2] == (1, encoders.image.last_channels)
    assert features.mid_map.shape[:2] == (1, encoders.image.mid_channels)
    tokens, lengths = cls.tokenizer([]).encode(TEXTS[:2])
    text = encoders.text(tokens, lengths)
    assert text.shape == (2, cls.fixed_width)
    assert torch.isfinite(features.vector).all() and torch.isfinite(text).all()
    (features.vector.sum() + text.sum()).backward()
    first = next(encoders.image.visual.parameters())  # RN50's first conv, a ViT's class embedding
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert encoders.text.token_embedding.weight.grad[tokens.unique()].abs().sum() > 0


def test_clip_rn50_maps_are_layer2_and_layer4_at_224px() -> None:
    encoders = encoder_class("clip_rn50")(embed_dim=1)
    assert (encoders.image.mid_channels, encoders.image.last_channels) == (512, 2048)
    assert encoders.image.fc is None  # the attention pool is CLIP's head: tirg_conv keeps its own


def test_the_cut_text_sequence_gives_open_clips_encode_text() -> None:
    torch.manual_seed(0)
    clip = open_clip.CLIP(**ClipTinyEncoders.clip_config()).eval()
    tower = ClipTextTower(clip).eval()
    tokens, lengths = ClipTokenizer("ViT-B-32-quickgelu").encode(TEXTS)
    full = open_clip.get_tokenizer("ViT-B-32-quickgelu")(TEXTS)  # (3, 77), what encode_text reads
    assert tokens.shape[1] < 77
    with torch.no_grad():
        assert torch.allclose(tower(tokens, lengths), clip.encode_text(full), atol=1e-5)


def test_tokenizer_lengths_count_start_and_end_tokens_and_cut_to_the_longest() -> None:
    tokenizer = ClipTokenizer("ViT-B-32-quickgelu")
    full = open_clip.get_tokenizer("ViT-B-32-quickgelu")(TEXTS)
    tokens, lengths = tokenizer.encode(TEXTS)
    eot = int(full.max())
    assert lengths[2] == 2  # the empty text: start and end only
    assert tokens.shape == (3, int(lengths.max()))
    assert torch.equal(tokens, full[:, : tokens.shape[1]])
    for row, n in zip(full, lengths.tolist()):
        assert row[n - 1] == eot and (row[n:] == 0).all() and (row[1 : n - 1] != eot).all()
    assert len(tokenizer) == 49408
    assert ClipTinyEncoders.restore_tokenizer(tokenizer.to_list()).to_list() == tokenizer.to_list()
    with pytest.raises(ValueError, match="uses CLIP's tokenizer"):
        ClipTinyEncoders.restore_tokenizer(["<unk>", "red"])


def test_images_are_renormalised_to_clip_statistics_and_resized_to_the_architecture() -> None:
    torch.manual_seed(0)
    tower = ClipTinyEncoders(embed_dim=1).image.eval()
    pixels = torch.rand(1, 3, 32, 32)  # in [0, 1], half clip_tiny's 64 px
    imagenet = (pixels - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    clip = (pixels - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    resized = F.interpolate(clip, size=(64, 64), mode="bicubic", antialias=True, align_corners=False)
    assert torch.allclose(tower.input(imagenet), resized, atol=1e-5)
    with torch.no_grad():
        direct = tower.visual(resized)  # open_clip's own forward on CLIP's input
        assert torch.allclose(tower(imagenet).vector, direct, atol=1e-5)


def test_weights_file_loads_and_bad_files_say_why(tmp_path) -> None:
    torch.manual_seed(1)
    clip = open_clip.CLIP(**ClipTinyEncoders.clip_config())
    path = tmp_path / "tiny.pt"
    torch.save(clip.state_dict(), path)
    torch.manual_seed(2)
    loaded = ClipTinyEncoders(embed_dim=1, weights=str(path))
    assert torch.equal(loaded.image.visual.conv1.weight, clip.visual.conv1.weight)
    assert torch.equal(loaded.text.token_embedding.weight, clip.token_embedding.weight)
    with pytest.raises(FileNotFoundError, match=r"clip_tiny weights file '.*nope.pt' does not exist; pass the path"):
        ClipTinyEncoders(embed_dim=1, weights=str(tmp_path / "nope.pt"))
    other = tmp_path / "other.pt"
    torch.save({"visual.conv1.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(ValueError, match=r"other.pt' does not hold weights of open_clip's ViT-B-32-quickgelu"):
        ClipTinyEncoders(embed_dim=1, weights=str(other))
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt' does not hold weights"):
        ClipTinyEncoders(embed_dim=1, weights=str(junk))


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_an_openai_torchscript_file_loads(tmp_path) -> None:
    torch.manual_seed(3)
    clip = open_clip.CLIP(**ClipTinyEncoders.clip_config()).eval()
    path = tmp_path / "ViT-tiny.pt"
    example = (torch.ones(1, 3, 64, 64), torch.zeros(1, 77, dtype=torch.long))
    torch.jit.save(torch.jit.trace(clip, example, check_trace=False), str(path))  # OpenAI ships TorchScript archives
    loaded = ClipTinyEncoders(embed_dim=1, weights=str(path))
    assert torch.equal(loaded.image.visual.conv1.weight, clip.visual.conv1.weight)
    assert torch.equal(loaded.text.positional_embedding, clip.positional_embedding)


def test_a_model_on_clip_works_in_clips_width_whatever_embed_dim() -> None:
    torch.manual_seed(0)
    model = CirModel(ModelConfig(composer="combiner", image_encoder="clip_tiny", embed_dim=512,
                                 vocab_size=len(ClipTinyEncoders.tokenizer([]))))
    assert model.embed_dim == 64
    tokens, lengths = ClipTinyEncoders.tokenizer([]).encode(TEXTS[:2])
    assert model.compose(torch.randn(2, 3, 64, 64), tokens, lengths).shape == (2, 64)


@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "clip_tiny"])
def test_frozen_encoders_give_a_last_map_to_differentiate_and_take_no_gradient(name: str) -> None:
    """MMGrad and the probes' Grad-CAM differentiate w.r.t. the last map, also after frozen layers."""
    torch.manual_seed(0)
    model = CirModel(ModelConfig(composer="tirg", image_encoder=name, embed_dim=8, vocab_size=4, frozen_encoders=True))
    features = model.encode_image(torch.randn(2, 3, 64, 64))
    (gradient,) = torch.autograd.grad(features.vector.sum(), features.last_map, retain_graph=True)
    assert gradient.shape == features.last_map.shape and gradient.abs().sum() > 0
    features.vector.sum().backward()
    assert all(p.grad is None for p in model.encoder_parameters())
