from __future__ import annotations

import pytest
import torch
import torchvision

from models.encoders import IMAGE_ENCODERS, IMAGENET_MEAN, IMAGENET_STD, ImageFeatures, normalize_images


def test_normalize_images_uses_imagenet_statistics():
    images = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    images[:, :, 0, 0] = 255
    out = normalize_images(images)
    assert out.dtype == torch.float32
    for c in range(3):
        assert out[0, c, 0, 0].item() == pytest.approx((1.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], rel=1e-6)
        assert out[0, c, 1, 1].item() == pytest.approx(-IMAGENET_MEAN[c] / IMAGENET_STD[c], rel=1e-6)


def test_normalize_images_rejects_float_input():
    with pytest.raises(TypeError, match="uint8"):
        normalize_images(torch.rand(1, 3, 2, 2))


def test_small_cnn_shapes_at_64px():
    encoder = IMAGE_ENCODERS.build("small_cnn", embed_dim=40)
    features = encoder(torch.randn(2, 3, 64, 64))
    assert isinstance(features, ImageFeatures)
    assert features.vector.shape == (2, 40)
    assert features.last_map.shape == (2, encoder.last_channels, 4, 4)
    assert features.mid_map.shape == (2, encoder.mid_channels, 16, 16)


def test_resnet18_shapes_at_64px():
    encoder = IMAGE_ENCODERS.build("resnet18", embed_dim=32)
    features = encoder(torch.randn(2, 3, 64, 64))
    assert features.vector.shape == (2, 32)
    assert features.last_map.shape == (2, 512, 2, 2) and encoder.last_channels == 512
    assert features.mid_map.shape == (2, 128, 8, 8) and encoder.mid_channels == 128
    assert torch.isfinite(features.vector).all()


def test_resnet18_missing_weights_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth.*does not exist"):
        IMAGE_ENCODERS.build("resnet18", embed_dim=32, weights=str(missing))


def test_resnet18_mismatched_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ValueError, match="does not match torchvision's resnet18"):
        IMAGE_ENCODERS.build("resnet18", embed_dim=32, weights=str(path))


def test_resnet18_loads_a_local_state_dict(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    encoder = IMAGE_ENCODERS.build("resnet18", embed_dim=32, weights=str(path))
    assert torch.equal(encoder.stem[0].weight, reference.conv1.weight)
    assert torch.equal(encoder.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_small_cnn_takes_no_weights():
    with pytest.raises(ValueError, match="from scratch"):
        IMAGE_ENCODERS.build("small_cnn", embed_dim=32, weights="x.pth")


def test_unknown_image_encoder_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown image encoder 'vit'.*resnet18.*small_cnn"):
        IMAGE_ENCODERS.build("vit", embed_dim=32)
