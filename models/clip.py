"""CLIP encoders from open_clip: CLIP's image tower and text tower, with CLIP's own BPE tokenizer.

CLIP: Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML
2021, https://arxiv.org/abs/2103.00020; open_clip: https://github.com/mlfoundations/open_clip. One
registry entry per architecture, each built from open_clip's bundled config:

    clip_rn50     RN50-quickgelu: OpenAI's CLIP ResNet-50, 224 px, features of width 1024
    clip_vit_b32  ViT-B-32-quickgelu: OpenAI's CLIP ViT-B/32, 224 px, width 512
    clip_tiny     a 2-block ViT and text transformer at 64 px, width 64; no checkpoint exists for it:
                  it runs the CLIP code paths at CPU-test cost (tests, smoke budgets)

Nothing is downloaded. Without `weights` the architecture has random weights; `weights` is a local
checkpoint of that architecture: a state dict (.pt/.pth/.bin), an open_clip training checkpoint
({"state_dict": ...}), a .safetensors file, or OpenAI's TorchScript archive (RN50.pt, ViT-B-32.pt).
The -quickgelu configs are the ones OpenAI's weights were trained with.

What the towers give (ImageFeatures, models/encoders.py):
- vector: CLIP's image embedding (attention pool for RN50, class token for ViT), width = CLIP's.
- last_map / mid_map: RN50's layer4 (2048, 7, 7) and layer2 (512, 28, 28) maps; for a ViT the patch
  tokens entering its last block and leaving its middle block as (width, g, g) grids (g = 7 for
  ViT-B/32 at 224 px). With frozen weights the last map is a leaf of the graph (graph_leaf), so
  MMGrad and the probes' Grad-CAM can still differentiate w.r.t. it.
- Input: the pipeline hands every encoder ImageNet-normalised images at the dataset's size; the tower
  re-maps the channels to CLIP's statistics (an exact per-channel affine map) and resizes to the
  architecture's size (bicubic, antialiased) when the images are another size: give `image_size:
  224` in the budget to decode the image maps at CLIP's size and skip the resize.
- text: the transformer's feature at the end-of-text token, projected. A batch is cut to its longest
  text instead of CLIP's 77 tokens: under the causal mask that token never sees the padding after it.
"""
from __future__ import annotations

import warnings
import zipfile
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from models.encoders import ENCODERS, IMAGENET_MEAN, IMAGENET_STD, Encoders, ImageFeatures, graph_leaf

__all__ = ["ClipEncoders", "ClipTokenizer", "ClipResNetTower", "ClipViTTower", "ClipTextTower", "load_clip_weights"]

# CLIP's image statistics (open_clip.constants OPENAI_DATASET_MEAN / STD), written here so that reading
# them does not import open_clip.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class _ClipInput(nn.Module):
    """ImageNet-normalised images at any size -> CLIP-normalised images at `image_size`."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        mean_in, std_in = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        mean, std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
        # x_clip = (p - mean) / std with p = x * std_in + mean_in
        self.register_buffer("scale", (std_in / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((mean_in - mean) / std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, 3, S, S)
        x = images * self.scale + self.shift
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", antialias=True,
                              align_corners=False)
        return x


def twice_differentiable() -> AbstractContextManager:
    """PyTorch's plain attention kernel while a graph is recorded: GA's input-gradient penalty and MMGrad
    back-propagate through a gradient (double backward), which the fused attention kernels cannot
    ("derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented").
    Without a graph (evaluation, feature caching) the fused kernels run."""
    return sdpa_kernel([SDPBackend.MATH]) if torch.is_grad_enabled() else nullcontext()


class ClipResNetTower(nn.Module):
    """open_clip's ModifiedResNet, returning its layer2 and layer4 maps beside the attention-pooled vector."""

    def __init__(self, visual: nn.Module, image_size: int) -> None:
        super().__init__()
        self.input = _ClipInput(image_size)
        self.visual = visual
        self.last_channels = visual.attnpool.k_proj.in_features  # width * 32: 2048 for RN50
        self.mid_channels = self.last_channels // 4  # layer2's width * 8: 512 for RN50
        self.fc = None  # the attention pool is CLIP's head: no Linear for tirg_conv to share

    def forward(self, images: Tensor) -> ImageFeatures:  # images (B, 3, H, W), ImageNet-normalised
        v = self.visual
        mid = v.layer2(v.layer1(v.stem(self.input(images))))  # (B, C2, S/8, S/8)
        last = graph_leaf(v.layer4(v.layer3(mid)))  # (B, C, S/32, S/32)
        with twice_differentiable():
            return ImageFeatures(v.attnpool(last), last, mid)  # vector (B, width)


class ClipViTTower(nn.Module):
    """open_clip's VisionTransformer, returning the patch tokens entering its last block and those leaving
    its middle block as (width, g, g) grids. The last map is the last block's input rather than its
    output, as Grad-CAM on ViTs takes it: the class token after the last block does not depend on that
    block's own patch outputs, so a map of them would have no gradient."""

    def __init__(self, visual: nn.Module, image_size: int) -> None:
        super().__init__()
        self.input = _ClipInput(image_size)
        self.visual = visual
        self.mid_block = max(len(visual.transformer.resblocks) // 2 - 1, 0)
        self.last_channels = self.mid_channels = visual.transformer.width
        self.fc = None

    def forward(self, images: Tensor) -> ImageFeatures:  # images (B, 3, H, W), ImageNet-normalised
        v = self.visual  # open_clip's own steps (_embeds, _pool), so the vector is exactly visual(x)
        x = v._embeds(self.input(images))  # (B, 1 + g*g, W): class token, then patches row by row
        *blocks, final = v.transformer.resblocks
        mid = x
        with twice_differentiable():
            for i, block in enumerate(blocks):
                x = block(x)
                if i == self.mid_block:
                    mid = x
            last = graph_leaf(_grid(x))  # (B, W, g, g)
            x = final(torch.cat([x[:, :1], last.flatten(2).transpose(1, 2)], dim=1))  # the last block reads the map
        pooled, _ = v._pool(x)  # (B, W)
        return ImageFeatures(pooled @ v.proj, last, _grid(mid))  # vector (B, width)


def _grid(tokens: Tensor) -> Tensor:
    """(B, 1 + g*g, W) tokens -> (B, W, g, g) grid of the patch tokens."""
    b, n, w = tokens.shape
    g = int(round((n - 1) ** 0.5))
    return tokens[:, 1:].reshape(b, g, g, w).permute(0, 3, 1, 2)


class ClipTextTower(nn.Module):
    """CLIP's text transformer: the feature of the end-of-text token (tokens[i, lengths[i] - 1]), projected."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)  # (77, 77) causal

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:  # tokens (B, L <= 77), lengths (B,)
        n = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:n]  # (B, L, W)
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask[:n, :n]))  # (B, L, W)
        end = x[torch.arange(x.shape[0], device=x.device), lengths.to(x.device) - 1]  # (B, W)
        return end @ self.text_projection  # (B, width)


class ClipTokenizer:
    """CLIP's BPE tokenizer (open_clip.get_tokenizer, bundled with open_clip: nothing is downloaded).

    encode(texts) -> tokens (B, L) with start and end-of-text tokens, padded with 0 and cut to the
    longest text, and lengths (B,) counting both special tokens. Texts longer than 77 tokens are cut
    to 77, ending with the end-of-text token, as CLIP does."""

    STORED = "<open_clip tokenizer {}>"  # what a checkpoint stores in place of a vocabulary

    def __init__(self, config_name: str) -> None:
        import open_clip

        self.config_name = config_name
        self._tokenize = open_clip.get_tokenizer(config_name)

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        full = self._tokenize([str(t) for t in texts])  # (B, 77), padded with 0
        # the end-of-text token has the largest id (49407), so its position is the row's argmax
        lengths = full.argmax(dim=1) + 1  # (B,)
        return full[:, : int(lengths.max()) if len(texts) else 1], lengths

    def to_list(self) -> list[str]:
        return [self.STORED.format(self.config_name)]

    def __len__(self) -> int:
        return int(self._tokenize.vocab_size)


def _is_torchscript(path: Path) -> bool:
    """OpenAI's CLIP files are TorchScript archives: a zip with a `<name>/code/` folder."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())


def load_clip_weights(model: nn.Module, weights: str, *, name: str, config_name: str) -> None:
    """Load a local checkpoint into the open_clip CLIP `model`; clear errors for a missing, unreadable or
    mismatched file (never open_clip's or torch's traceback)."""
    import open_clip

    path = Path(weights)
    fix = (f"pass the path of a local checkpoint of open_clip's {config_name} (a state dict, an open_clip "
           f"checkpoint, a .safetensors file or OpenAI's TorchScript file), or no weights for random ones")
    if not path.is_file():
        raise FileNotFoundError(f"{name} weights file {str(path)!r} does not exist; {fix}")
    try:
        if _is_torchscript(path):
            with warnings.catch_warnings():  # "TorchScript is deprecated": nothing a user of OpenAI's file can act on
                warnings.simplefilter("ignore", FutureWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
            # entries a TorchScript archive keeps that are no weights of the model
            transient = {n for n, _ in model.named_buffers()} - set(model.state_dict())  # e.g. attn_mask
            for key in ("input_resolution", "context_length", "vocab_size", *transient):
                state.pop(key, None)
            model.load_state_dict(state, strict=True)
        else:
            open_clip.load_checkpoint(model, str(path), strict=True)
    except Exception as error:  # noqa: BLE001 - pickle, zip, safetensors and load_state_dict errors alike
        reason = " ".join(line.strip() for line in str(error).strip().splitlines()[:2])[:300]
        raise ValueError(f"{name} weights file {str(path)!r} does not hold weights of open_clip's {config_name} "
                         f"({type(error).__name__}: {reason}); {fix}") from None


class ClipEncoders(Encoders):
    """A CLIP image tower and text tower built from one open_clip CLIP model (and so one weights file).

    `embed_dim` is ignored: the composer works in CLIP's joint space (`fixed_width`)."""

    word_tokens = False
    config_name: ClassVar[str]  # open_clip's built-in config
    image_tower: ClassVar[type[nn.Module]]

    def __init__(self, *, embed_dim: int, weights: str | None = None, vocab_size: int = 1) -> None:
        import open_clip

        super().__init__(embed_dim=embed_dim, weights=weights, vocab_size=vocab_size)
        config = self.clip_config()
        clip = open_clip.CLIP(**config)
        if weights is not None:
            load_clip_weights(clip, weights, name=self.name(), config_name=self.config_name)
        self.image = self.image_tower(clip.visual, int(config["vision_cfg"]["image_size"]))
        self.text = ClipTextTower(clip)
        self.width = int(config["embed_dim"])

    @classmethod
    def name(cls) -> str:
        return next(n for n in ENCODERS.names() if ENCODERS.get(n) is cls)

    @classmethod
    def clip_config(cls) -> dict[str, Any]:
        import open_clip

        return open_clip.get_model_config(cls.config_name)

    @classmethod
    def tokenizer(cls, texts: Sequence[str]) -> ClipTokenizer:
        return ClipTokenizer(cls.config_name)

    @classmethod
    def restore_tokenizer(cls, stored: Sequence[str]) -> ClipTokenizer:
        tokenizer = ClipTokenizer(cls.config_name)
        if list(stored) != tokenizer.to_list():
            raise ValueError(f"{cls.name()} uses CLIP's tokenizer, stored as {tokenizer.to_list()}; the checkpoint "
                             f"holds {list(stored)[:3]}... (another encoder's text side?)")
        return tokenizer


@ENCODERS.register("clip_rn50")
class ClipRn50Encoders(ClipEncoders):
    config_name = "RN50-quickgelu"
    image_tower = ClipResNetTower
    fixed_width = 1024


@ENCODERS.register("clip_vit_b32")
class ClipViTB32Encoders(ClipEncoders):
    config_name = "ViT-B-32-quickgelu"
    image_tower = ClipViTTower
    fixed_width = 512


@ENCODERS.register("clip_tiny")
class ClipTinyEncoders(ClipEncoders):
    """CLIP's code paths at test cost: a ViT of 2 blocks (width 64, 16 px patches of 64 px images: a 4x4
    grid) and a text transformer of 2 blocks (width 64) with CLIP's tokenizer and 49408-token vocabulary."""

    config_name = "ViT-B-32-quickgelu"  # whose tokenizer it uses; the architecture is clip_config()
    image_tower = ClipViTTower
    fixed_width = 64

    @classmethod
    def clip_config(cls) -> dict[str, Any]:
        return {
            "embed_dim": 64, "quick_gelu": True,
            "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
        }
