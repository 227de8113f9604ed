"""Family tests for the mobile-block builder (efficientnet + mobilenetv3 modules): block grammar,
depth/width scaling, the feature interface, and the training-memory remedies (which must not
change outputs, gradients or batch-norm statistics)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import visionzoo
from visionzoo.layers.activations_me import activation_me, batch_norm_act_me
from visionzoo.models._mobile_builder import parse_block, round_channels, scale_stage_depth
from visionzoo.models._mobile_memory import apply_memory_efficient


# ---------------------------------------------------------------- grammar and scaling


def test_parse_block_tokens() -> None:
    d = parse_block("ir x3 k3.5.7 ek1.1 pk1.1 s2 e6 c40 se0.25 swish noskip gs8")
    assert (d.kind, d.repeats, d.kernel, d.exp_kernel, d.pw_kernel) == ("ir", 3, (3, 5, 7), (1, 1), (1, 1))
    assert (d.stride, d.exp_ratio, d.out_chs, d.se_ratio, d.act, d.skip, d.group_size) == (
        2, 6.0, 40, 0.25, "swish", False, 8)
    u = parse_block("uir ks3 km5 s2 e4 c80")
    assert (u.start_kernel, u.mid_kernel, u.end_kernel) == (3, 5, 0)
    q = parse_block("mqa h4 kd64 vd64 kv2 c160")
    assert (q.num_heads, q.key_dim, q.value_dim, q.kv_stride) == (4, 64, 64, 2)


@pytest.mark.parametrize("text", ["xx k3 c16", "ir k3", "ir k3 c16 bogus7", "ir k3 c16 q"])
def test_parse_block_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_block(text)


def test_depth_scaling() -> None:
    assert scale_stage_depth([2], 1.4, "ceil") == [3]
    assert scale_stage_depth([1, 1], 1.2, "round") == [1, 1]      # mixnet_xl stage 1
    assert scale_stage_depth([1, 1], 1.3, "round") == [1, 2]      # extra depth goes to the last def
    assert scale_stage_depth([1, 1, 2], 1.2, "ceil") == [1, 2, 2]
    assert scale_stage_depth([1], 0.5, "round") == [1]
    with pytest.raises(ValueError):
        scale_stage_depth([1], 1.0, "floor")


def test_round_channels() -> None:
    assert round_channels(16, 1.2) == 24          # 19.2 -> 16 would drop > 10%
    assert round_channels(32, 1.2, round_limit=0.0) == 40
    assert round_channels(16, 1.2, divisor=16) == 32


# ---------------------------------------------------------------- model interface


SMALL = ["test_efficientnet", "mobilenetv3_small_050", "lcnet_035", "mobilenetv4_conv_small_035",
         "efficientnet_x_b3", "mobilenetv4_hybrid_medium_075", "tf_mixnet_s"]


@pytest.mark.parametrize("name", SMALL)
def test_features_match_feature_info(name: str) -> None:
    model = visionzoo.create_model(name).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert final.shape[1] == model.num_features
        assert [m.shape[1] for m in maps] == [f["num_chs"] for f in model.feature_info]
        assert [64 // m.shape[-1] for m in maps] == [f["reduction"] for f in model.feature_info]
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape[1] == model.head_hidden_size
        feats = visionzoo.create_model(name, features_only=True, out_indices=(1, 2)).eval()
        assert [m.shape[1] for m in feats(x)] == [maps[1].shape[1], maps[2].shape[1]]


def test_classifier_reset_and_pool() -> None:
    for name in ("test_efficientnet", "mobilenetv3_small_050"):
        model = visionzoo.create_model(name, num_classes=7, global_pool="catavgmax")
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)
        model.reset_classifier(0)
        x = torch.randn(2, 3, 64, 64)
        assert model(x).shape == model.forward_head(model.forward_features(x), pre_logits=True).shape


def test_tf_same_padding_odd_input_and_output_stride() -> None:
    model = visionzoo.create_model("tf_efficientnet_lite0", num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 67, 71)).shape == (1, 5)
    model = visionzoo.create_model("test_efficientnet", output_stride=16).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 64, 64)).shape[-1] == 4
    assert [f["reduction"] for f in model.feature_info][-1] == 16


def test_meta_build_and_bad_kwargs() -> None:
    with torch.device("meta"):
        model = visionzoo.create_model("efficientnet_b0")
    assert next(model.parameters()).device.type == "meta"
    with pytest.raises(TypeError):
        visionzoo.create_model("efficientnet_b0", not_an_arg=1)
    with pytest.raises(ValueError):
        visionzoo.create_model("test_efficientnet", memory_efficient="everything")


# ---------------------------------------------------------------- memory remedies


def _train_step(model: torch.nn.Module, x: torch.Tensor) -> tuple:
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(x)
    F.cross_entropy(out, torch.arange(x.shape[0]) % out.shape[1]).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return out.detach(), grads, {n: b.clone() for n, b in model.named_buffers()}


@pytest.mark.parametrize("name", ["test_efficientnet", "mobilenetv3_small_050"])
@pytest.mark.parametrize("level,ckpt", [("inplace", False), ("act", False), ("block", False), (False, True),
                                        ("block", True)])
def test_memory_modes_same_results(name: str, level: str | bool, ckpt: bool) -> None:
    torch.manual_seed(0)
    base = visionzoo.create_model(name, num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    ref_out, ref_g, ref_b = _train_step(copy.deepcopy(base), x)
    model = apply_memory_efficient(copy.deepcopy(base), level)
    model.set_grad_checkpointing(ckpt)
    out, grads, bufs = _train_step(model, x)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    scale = max(g.abs().max() for g in ref_g.values())
    assert max((grads[k] - ref_g[k]).abs().max() for k in ref_g) <= 1e-4 * scale
    for k, b in ref_b.items():  # running stats updated exactly once, even with recompute
        torch.testing.assert_close(bufs[k], b, rtol=1e-5, atol=1e-6)
    assert model.state_dict().keys() == base.state_dict().keys()


def test_memory_efficient_saves_fewer_tensors() -> None:
    x = torch.randn(2, 3, 64, 64)

    def saved_numel(model: torch.nn.Module) -> int:
        total = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            if t.dim() == 4 and t.shape[0] == 2:  # activations only (not weights)
                total[0] += t.numel()
            return t

        model.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x)
        return total[0]

    plain = saved_numel(visionzoo.create_model("efficientnet_b0"))
    act = saved_numel(visionzoo.create_model("efficientnet_b0", memory_efficient="act"))
    assert act < 0.8 * plain


@pytest.mark.parametrize("act", ["silu", "hard_swish", "relu6", "gelu"])
def test_me_activations_match_autograd(act: str) -> None:
    ref_fn = {"silu": F.silu, "hard_swish": F.hardswish, "relu6": F.relu6, "gelu": F.gelu}[act]
    x = (torch.randn(2, 4, 5, 5) * 3).requires_grad_()
    g = torch.randn(2, 4, 5, 5)
    (ref_fn(x) * g).sum().backward()
    ref = x.grad.clone()
    x.grad = None
    (activation_me(x, act) * g).sum().backward()
    torch.testing.assert_close(x.grad, ref)
    x.grad = None
    w, b = torch.rand(4, requires_grad=True), torch.randn(4, requires_grad=True)
    rm, rv = torch.zeros(4), torch.ones(4)
    (ref_fn(F.batch_norm(x, rm.clone(), rv.clone(), w, b, True, 0.1, 1e-5)) * g).sum().backward()
    ref = [x.grad.clone(), w.grad.clone(), b.grad.clone()]
    x.grad = w.grad = b.grad = None
    (batch_norm_act_me(x, w, b, rm, rv, 0.1, 1e-5, act)[0] * g).sum().backward()
    for got, exp in zip([x.grad, w.grad, b.grad], ref):
        torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-5)
