"""The typed selection query: validation, what it asks to measure, and the static filters."""
from __future__ import annotations

import dataclasses

import pytest

from visionzoo.bench.reference import AccuracyRow
from visionzoo.bench.select import SelectionQuery, gather_candidates, published_rows


def _rows() -> list[AccuracyRow]:
    return [
        AccuracyRow("resnet18.a1_in1k", 224, 71.5, 90.1, 11.7, pretrain="in1k"),
        AccuracyRow("resnet50.a1_in1k", 224, 80.4, 95.0, 25.6, pretrain="in1k"),
        AccuracyRow("resnet50.a1_in1k", 288, 81.2, 95.4, 25.6, pretrain="in1k"),
        AccuracyRow("vit_base_patch16_224.augreg_in21k_ft_in1k", 224, 81.1, 96.0, 86.6, pretrain="in21k"),
        AccuracyRow("no_such_net_b7.x_in1k", 224, 90.0, 99.0, 5.0, pretrain="in1k"),
    ]


@pytest.mark.parametrize("bad, match", [
    (dict(cost="speed"), "cost must be one of"),
    (dict(timing="mean"), "timing must be"),
    (dict(max_latency_ms=0), "max_latency_ms must be > 0"),
    (dict(max_params_m=-3), "max_params_m must be > 0"),
    (dict(top=0), "top must be >= 1"),
    (dict(max_benchmarks=-1), "max_benchmarks >= 0"),
])
def test_query_rejects_bad_fields(bad, match):
    with pytest.raises(ValueError, match=match):
        SelectionQuery(**bad)


def test_query_normalises_sequences_and_is_frozen():
    q = SelectionQuery(models="resnet*", exclude=["vit_*", "deit_*"], pretrain=None)
    assert q.models == ("resnet*",) and q.exclude == ("vit_*", "deit_*") and q.pretrain == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.top = 3  # type: ignore[misc]
    # min_top1 may be any number (a floor), the other limits must be positive
    assert SelectionQuery(min_top1=0).limits["min_top1"] == 0
    assert SelectionQuery(max_train_memory_gb=2).mem_limit_mib == 2048


@pytest.mark.parametrize("fields, train, infer", [
    (dict(), False, True),
    (dict(max_train_step_ms=50), True, True),  # the default cost (latency) is still measured
    (dict(max_train_step_ms=50, cost="params"), True, False),
    (dict(max_train_memory_gb=4, max_latency_ms=10), True, True),
    (dict(cost="train-memory"), True, False),
    (dict(cost="train-step", measure_train=False), False, True),
    (dict(cost="gmacs", measure_train=True), True, False),
])
def test_query_decides_what_to_measure(fields, train, infer):
    q = SelectionQuery(**fields)
    assert (q.need_train, q.need_infer) == (train, infer)


def test_query_stat_suffix_follows_timing():
    assert SelectionQuery().stat == "" and SelectionQuery(timing="min").stat == "_min"


def test_published_rows_apply_static_filters():
    rows = _rows()
    assert [r.model for r in published_rows(SelectionQuery(), rows)][0] == "no_such_net_b7.x_in1k"  # best first
    q = SelectionQuery(img_size=224, models=["resnet*", "vit_*"], exclude="resnet18", min_top1=80.5)
    assert [r.model for r in published_rows(q, rows)] == ["vit_base_patch16_224.augreg_in21k_ft_in1k"]
    q = SelectionQuery(pretrain="in1k", max_params_m=20)
    assert [r.model for r in published_rows(q, rows)] == ["no_such_net_b7.x_in1k", "resnet18.a1_in1k"]
    with pytest.raises(ValueError, match="img_size 512"):
        published_rows(SelectionQuery(img_size=512), rows)
    with pytest.raises(ValueError, match="matches no published result"):
        published_rows(SelectionQuery(models="zzz*"), rows)


def test_candidates_take_each_architectures_best_row():
    implemented, missing = gather_candidates(published_rows(SelectionQuery(), _rows()))
    by_arch = {c.arch: c for c in implemented}
    assert set(by_arch) == {"resnet18", "resnet50", "vit_base_patch16_224"}
    assert by_arch["resnet50"].row.img_size == 288  # its more accurate published size
    assert by_arch["resnet50"].family == "resnet" and by_arch["vit_base_patch16_224"].family == "vision_transformer"
    assert [c.name for c in missing] == ["no_such_net_b7.x_in1k"] and missing[0].status == "not implemented"
