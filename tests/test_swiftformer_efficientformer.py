"""Family behaviour of SwiftFormer and EfficientFormer: the distillation head."""
import pytest
import torch

import visionzoo


@pytest.mark.parametrize("name", ["swiftformer_xs", "efficientformer_l1", "efficientformerv2_s0"])
def test_distilled_heads_average_in_eval_and_split_in_training(name):
    model = visionzoo.create_model(name, num_classes=5).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        expect = (model.head(pooled) + model.head_dist(pooled)) / 2
        torch.testing.assert_close(model(x), expect)
        model.set_distilled_training(True)
        model.train()
        y, y_dist = model.forward_head(feats)
        assert y.shape == y_dist.shape == (1, 5)
    model.reset_classifier(3, "avg")
    assert model.head.out_features == model.head_dist.out_features == 3
    assert model.get_classifier() is model.head
    with torch.no_grad():
        assert isinstance(model(x), tuple)  # still distilled training: the pair, now of 3 classes
        assert model.eval()(x).shape == (1, 3)
