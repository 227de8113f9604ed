"""The pretrained configuration record: where weights live and how inputs must look."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

__all__ = ["PretrainedCfg", "IMAGENET_DEFAULT_MEAN", "IMAGENET_DEFAULT_STD",
           "IMAGENET_INCEPTION_MEAN", "IMAGENET_INCEPTION_STD", "merge_cfg"]

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
IMAGENET_INCEPTION_MEAN = (0.5, 0.5, 0.5)
IMAGENET_INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass
class PretrainedCfg:
    """Weights location plus the preprocessing and head layout the weights were trained with.

    ``first_conv`` and ``classifier`` name modules (or tuples of them) so that loading can adapt
    the input channels and drop/replace the classifier without family-specific code.
    """

    architecture: str | None = None
    tag: str | None = None
    # weight sources, tried in the order file -> hf_hub_id -> url
    file: str | None = None
    hf_hub_id: str | None = None
    hf_hub_filename: str | None = None
    url: str | None = None
    sha256: str | None = None
    # weights shipped inside an installed Python package (offline): package name + relative path
    package: str | None = None
    package_file: str | None = None
    converter: str | None = None  # foreign checkpoint layout, see visionzoo.convert
    custom_load: bool = False
    # input
    input_size: tuple[int, int, int] = (3, 224, 224)
    test_input_size: tuple[int, int, int] | None = None
    min_input_size: tuple[int, int, int] | None = None
    fixed_input_size: bool = False
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    test_crop_pct: float | None = None
    crop_mode: str = "center"
    mean: tuple[float, ...] = IMAGENET_DEFAULT_MEAN
    std: tuple[float, ...] = IMAGENET_DEFAULT_STD
    # head
    num_classes: int = 1000
    label_offset: int | None = None
    label_names: tuple[str, ...] | None = None
    pool_size: tuple[int, int] | None = None
    first_conv: str | tuple[str, ...] | None = None
    classifier: str | tuple[str, ...] | None = None
    # provenance
    license: str | None = None
    origin_url: str | None = None
    paper_ids: str | tuple[str, ...] | None = None
    paper_name: str | None = None
    notes: str | tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_weights(self) -> bool:
        return bool(self.file or self.hf_hub_id or self.url or self.package)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PretrainedCfg":
        known = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {}
        extra: dict[str, Any] = dict(d.get("extra", {}) or {})
        for k, v in d.items():
            if k == "extra":
                continue
            if k in known:
                kw[k] = _tuplify(v)
            else:
                extra[k] = v
        return cls(**kw, extra=extra)

    def to_dict(self, drop_none: bool = True) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        d.update(self.extra)
        if drop_none:
            d = {k: v for k, v in d.items() if v is not None}
        return d

    def replace(self, **changes: Any) -> "PretrainedCfg":
        return merge_cfg(self, changes)


def _tuplify(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuplify(x) for x in v)
    return v


def merge_cfg(cfg: PretrainedCfg, overlay: Mapping[str, Any] | None) -> PretrainedCfg:
    """Return a copy of ``cfg`` with the keys of ``overlay`` replaced (unknown keys go to extra)."""
    if not overlay:
        return dataclasses.replace(cfg, extra=dict(cfg.extra))
    d = cfg.to_dict(drop_none=False)
    d.update(overlay)
    return PretrainedCfg.from_dict(d)
