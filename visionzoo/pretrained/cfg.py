"""The pretrained configuration record: where weights live and how inputs must look."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

__all__ = ["PretrainedCfg", "IMAGENET_DEFAULT_MEAN", "IMAGENET_DEFAULT_STD",
           "IMAGENET_INCEPTION_MEAN", "IMAGENET_INCEPTION_STD", "merge_cfg"]

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
IMAGENET_INCEPTION_MEAN = (0.5, 0.5, 0.5)
IMAGENET_INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(eq=False)
class PretrainedCfg(MutableMapping):
    """Weights location plus the preprocessing and head layout the weights were trained with.

    ``first_conv`` and ``classifier`` name modules (or tuples of them) so that loading can adapt
    the input channels and drop/replace the classifier without family-specific code.

    The record is also a mapping, as the reference library's cfg dicts are: ``cfg['input_size']``,
    ``cfg.get('mean')``, ``'pool_size' in cfg``, ``dict(cfg)`` and ``cfg == {...}`` all work. Its keys
    are the fields whose value is not ``None``, the fields given explicitly as ``None`` (recorded in
    ``null_keys``, so a ViT's ``pool_size: None`` stays a key as in the reference) and the entries
    of ``extra`` (keys the dataclass does not model); an untagged cfg (``tag == ''``) has no
    ``tag`` key. ``dict(cfg)`` equals :meth:`to_dict`.
    Assigning a key sets the field (or an ``extra`` entry); deleting one resets a field to ``None``.

    ``implied_keys`` names fields that visionzoo filled in where the source gave nothing (a tag's
    licence becomes ``"unknown"``): the attribute holds the value, but the mapping view leaves the
    key out, so ``dict(cfg)`` still equals the source's record.
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
    # fields given explicitly as None (the reference keeps e.g. a ViT's ``pool_size: None`` key)
    null_keys: frozenset[str] = field(default=frozenset(), repr=False)
    # fields holding a visionzoo default the source did not give (attribute only, not a mapping key)
    implied_keys: frozenset[str] = field(default=frozenset(), repr=False)

    @property
    def has_weights(self) -> bool:
        return bool(self.file or self.hf_hub_id or self.url or self.package)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PretrainedCfg":
        kw: dict[str, Any] = {}
        extra: dict[str, Any] = dict(d.get("extra", {}) or {})
        nulls = set(d.get("null_keys", ()) or ())
        for k, v in d.items():
            if k in ("extra", "null_keys", "implied_keys"):
                continue
            if k in _FIELD_NAMES:
                kw[k] = _tuplify(v)
                if v is None:
                    nulls.add(k)
            else:
                extra[k] = v
        return cls(**kw, extra=extra, null_keys=frozenset(nulls))

    def to_dict(self, drop_none: bool = True) -> dict[str, Any]:
        """The cfg as a plain dict: the mapping view, or with ``drop_none=False`` every field."""
        if drop_none:
            return dict(self.items())
        d = {name: getattr(self, name) for name in _FIELD_NAMES}
        d.update(self.extra)
        return d

    def replace(self, **changes: Any) -> "PretrainedCfg":
        return merge_cfg(self, changes)

    # -- mapping view -------------------------------------------------------------------------
    def _is_key(self, name: str, value: Any) -> bool:
        if name in self.implied_keys:
            return False
        if value is None:
            return name in self.null_keys
        return not (name == "tag" and value == "")  # an untagged cfg has no tag key, as in the reference
    def __getitem__(self, key: str) -> Any:
        if key in _FIELD_NAMES:
            value = getattr(self, key)
            if self._is_key(key, value):
                return value
        elif key in self.extra:
            return self.extra[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        for name in _FIELD_NAMES:
            if self._is_key(name, getattr(self, name)):
                yield name
        yield from self.extra

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, key: object) -> bool:
        if key in _FIELD_NAMES:
            return self._is_key(key, getattr(self, key))  # type: ignore[arg-type]
        return key in self.extra

    def __setitem__(self, key: str, value: Any) -> None:
        if key in _FIELD_NAMES:
            setattr(self, key, _tuplify(value))
            self.null_keys = self.null_keys | {key} if value is None else self.null_keys - {key}
            self.implied_keys = self.implied_keys - {key}
        elif key in ("extra", "null_keys", "implied_keys"):
            raise KeyError(f"{key!r} is not a cfg key")
        else:
            self.extra[key] = value

    def __delitem__(self, key: str) -> None:
        if key in _FIELD_NAMES and key in self:
            setattr(self, key, None)
            self.null_keys = self.null_keys - {key}
        elif key in self.extra:
            del self.extra[key]
        else:
            raise KeyError(key)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


# the dataclass fields that are mapping keys ("extra" holds further keys itself)
_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(PretrainedCfg)
                                      if f.name not in ("extra", "null_keys", "implied_keys"))


def _tuplify(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuplify(x) for x in v)
    return v


def merge_cfg(cfg: PretrainedCfg, overlay: Mapping[str, Any] | None) -> PretrainedCfg:
    """Return a copy of ``cfg`` with the keys of ``overlay`` replaced (unknown keys go to extra)."""
    if not overlay:
        return dataclasses.replace(cfg, extra=dict(cfg.extra))
    d = dict(cfg.items())  # unset fields stay unset; explicit None keys stay keys
    d.update(overlay.items())
    out = PretrainedCfg.from_dict(d)
    implied = {k for k in cfg.implied_keys if k not in overlay}  # defaults the overlay did not replace
    for k in implied:
        setattr(out, k, getattr(cfg, k))
    out.implied_keys = frozenset(implied)
    return out
