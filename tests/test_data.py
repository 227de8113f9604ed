"""Data config resolution, eval/train transforms, image loading errors, class names."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from visionzoo.data.class_names import class_names_for, imagenet_class_names
from visionzoo.data.config import resolve_data_config
from visionzoo.data.images import ImageLoadError, find_images, load_image
from visionzoo.data.transforms import create_transform
from visionzoo.pretrained.cfg import PretrainedCfg

CFG = PretrainedCfg(input_size=(3, 224, 224), test_input_size=(3, 288, 288), crop_pct=0.95, test_crop_pct=1.0,
                    interpolation="bicubic", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))


def test_resolve_from_cfg_args_and_test_size():
    c = resolve_data_config(pretrained_cfg=CFG)
    assert c == dict(input_size=(3, 224, 224), interpolation="bicubic", crop_mode="center", crop_pct=0.95,
                     mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    t = resolve_data_config(pretrained_cfg=CFG, use_test_size=True)
    assert t["input_size"] == (3, 288, 288) and t["crop_pct"] == 1.0
    a = resolve_data_config(dict(img_size=160, crop_pct=None, interpolation="bilinear"), pretrained_cfg=CFG)
    assert a["input_size"] == (3, 160, 160) and a["crop_pct"] == 0.95 and a["interpolation"] == "bilinear"
    gray = resolve_data_config(dict(in_chans=1), pretrained_cfg=CFG)
    assert gray["input_size"] == (1, 224, 224) and gray["mean"] == pytest.approx((0.4,)) and len(gray["std"]) == 1


def test_eval_transform_resize_crop_normalize():
    cfg = resolve_data_config(pretrained_cfg=CFG)
    tf = create_transform(**cfg)
    img = Image.new("RGB", (500, 375), (255, 128, 0))
    x = tf(img)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    expected = (torch.tensor([255, 128, 0]) / 255.0 - torch.tensor(CFG.mean)) / torch.tensor(CFG.std)
    torch.testing.assert_close(x[:, 100, 100], expected.float(), rtol=0, atol=1e-5)
    # shorter side to floor(224 / 0.95) = 235, then the center crop
    resize = tf.transforms[1]
    assert resize.size == 235


def test_center_crop_takes_the_center():
    arr = np.zeros((300, 400, 3), np.uint8)
    arr[140:160, 190:210] = 255  # white square in the middle
    tf = create_transform(input_size=(3, 32, 32), crop_pct=1.0, mean=(0, 0, 0), std=(1, 1, 1),
                          interpolation="nearest")
    x = tf(Image.fromarray(arr))
    assert x[:, 16, 16].min() == 1.0 and x[:, 0, 0].max() == 0.0


@pytest.mark.parametrize("mode", ["squash", "border"])
def test_other_crop_modes(mode):
    tf = create_transform(input_size=(3, 64, 64), crop_mode=mode, crop_pct=1.0)
    assert tf(Image.new("RGB", (200, 50))).shape == (3, 64, 64)


def test_training_transform_and_modes():
    torch.manual_seed(0)
    tf = create_transform(input_size=(3, 48, 48), is_training=True, color_jitter=0.3)
    for img in (Image.new("RGB", (120, 80)), Image.new("L", (30, 90)), Image.new("RGBA", (64, 64)),
                Image.new("P", (40, 40))):
        assert tf(img).shape == (3, 48, 48)
    gray = create_transform(input_size=(1, 32, 32), mean=(0.5,), std=(0.5,))
    assert gray(Image.new("RGB", (50, 50), (10, 20, 30))).shape == (1, 32, 32)
    with pytest.raises(ValueError, match="crop_mode"):
        create_transform(crop_mode="diagonal")


def test_rgba_is_composited_on_white():
    img = Image.new("RGBA", (40, 40), (0, 0, 0, 0))  # fully transparent
    x = create_transform(input_size=(3, 32, 32), mean=(0, 0, 0), std=(1, 1, 1), crop_pct=1.0)(img)
    assert torch.allclose(x, torch.ones_like(x))


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "notimage.jpg").write_text("hello")
    with pytest.raises(ImageLoadError, match="not a readable image"):
        load_image(tmp_path / "notimage.jpg")
    big = tmp_path / "big.png"
    Image.new("L", (300, 300)).save(big)
    with pytest.raises(ImageLoadError, match="exceeds"):
        load_image(big, max_pixels=10_000)
    assert load_image(big).size == (300, 300)
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)
    assert find_images([tmp_path]) == [big, tmp_path / "notimage.jpg"]


def test_class_names():
    names = imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[281] == "tabby"
    assert imagenet_class_names(short=False)[1].startswith("goldfish")
    assert class_names_for(3) == ["0", "1", "2"]
    assert class_names_for(2, ("cat", "dog")) == ["cat", "dog"]
