"""Multi-scale features: :class:`FeatureInfo` and the ``features_only`` wrappers.

Every model implements ``forward_intermediates`` and ``prune_intermediate_layers``. A wrapper
prunes what comes after the deepest requested level, computes the maps through
``forward_intermediates`` (or forward hooks) and presents the kept modules under the
``state_dict`` names that the reference library's wrapper uses for the family, so detection and
segmentation checkpoints saved from such a wrapper load unchanged.

Which wrapper a family gets is declared on its model class (an architecture may override it
through its ``Variant``)::

    class ConvNeXt(...):
        feature_cfg = {"feature_cls": "list", "flatten_sequential": True}

``feature_cls`` (a user may pick any of the first four with ``create_model(..., feature_cls=)``):

* ``'list'`` / ``'dict'`` (:class:`FeatureListNet` / :class:`FeatureDictNet`): the model's
  top-level children in order, up to the one that produces the deepest requested level (later
  ones - final norms, heads - are absent). With ``flatten_sequential`` each ``nn.Sequential``
  child is replaced by its own children, named ``<child>_<name>`` (``stages.0.x`` becomes
  ``stages_0.x``). ``forward`` returns a list / an ordered dict keyed by module name.
* ``'getter'`` (:class:`FeatureGetterNet`): the pruned model nested as ``model.``.
* ``'hook'`` (:class:`FeatureHookNet`): the same layout as ``'list'``; maps are the outputs of the
  feature modules, caught with forward hooks (raw module outputs: token models give tokens).
* any other name (``'EfficientNetFeatures'``, ``'MobileNetV3Features'``, ...): a family-specific
  wrapper of that class name whose keys are the pruned model's own (the head removed).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

__all__ = ["FeatureInfo", "FeatureDictNet", "FeatureListNet", "FeatureGetterNet", "FeatureHookNet",
           "PrunedFeatureNet", "create_feature_model", "resolve_feature_cfg", "feature_take_indices",
           "default_out_indices", "FEATURE_CLS_CHOICES", "DEFAULT_FEATURE_CFG"]

#: what ``create_model(..., features_only=True, feature_cls=)`` accepts
FEATURE_CLS_CHOICES = ("list", "dict", "getter", "hook")
#: the wrapper of a model class that declares no ``feature_cfg``
DEFAULT_FEATURE_CFG: Mapping[str, Any] = {"feature_cls": "list", "flatten_sequential": False}

Indices = Union[int, Sequence[int], None]


def feature_take_indices(num_features: int, indices: Indices = None) -> tuple[list[int], int]:
    """Normalise intermediate indices: an int ``n`` means the last ``n``; negatives count back.

    Returns (absolute indices, largest index). Out-of-range indices raise ``ValueError``.
    """
    if indices is None:
        indices = num_features
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"last-n indices must be in 1..{num_features}, got {indices}")
        take = list(range(num_features - indices, num_features))
    else:
        take = []
        for i in indices:
            j = i + num_features if i < 0 else i
            if not 0 <= j < num_features:
                raise ValueError(f"feature index {i} out of range for {num_features} feature levels")
            take.append(j)
        if not take:
            raise ValueError("no feature index given")
    return take, max(take)


def default_out_indices(model: nn.Module) -> tuple[int, ...]:
    """A model's default ``out_indices`` (``model.default_out_indices`` or every level)."""
    idx = getattr(model, "default_out_indices", None)
    if idx is not None:
        return tuple(idx)
    return tuple(range(len(model.feature_info)))


class FeatureInfo:
    """Channels, reduction and module name of a model's feature levels, and which are selected.

    ``FeatureInfo(model.feature_info, out_indices)``: ``out_indices`` is an int (the last ``n``
    levels) or a sequence of level indices (negative ones count from the end). ``info`` lists
    every level; each entry carries ``num_chs``, ``reduction``, ``module`` and ``index`` (its
    position in ``info``). Accessors without ``idx`` answer for the selected levels, with an int
    ``idx`` for that level of ``info``, with a sequence for those levels.
    """

    def __init__(self, feature_info: Sequence[Mapping[str, Any]] | "FeatureInfo", out_indices: Indices = None) -> None:
        if isinstance(feature_info, FeatureInfo):
            feature_info = feature_info.info
        info = []
        for i, entry in enumerate(feature_info):
            entry = dict(entry)
            missing = [k for k in ("num_chs", "reduction", "module") if k not in entry]
            if missing:
                raise ValueError(f"feature_info[{i}] lacks {', '.join(missing)}: {entry}")
            entry.setdefault("index", i)
            info.append(entry)
        if not info:
            raise ValueError("feature_info is empty")
        self.info = info
        self.out_indices = tuple(feature_take_indices(len(info), out_indices)[0])

    def from_other(self, out_indices: Indices) -> "FeatureInfo":
        """The same levels with another selection."""
        return FeatureInfo(self.info, out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> Any:
        """The level dicts (all fields, or only ``keys``) of the selected levels (or ``idx``)."""
        def pick(entry: dict[str, Any]) -> dict[str, Any]:
            return dict(entry) if keys is None else {k: entry[k] for k in keys}

        if idx is None:
            return [pick(self.info[i]) for i in self.out_indices]
        if isinstance(idx, int):
            return pick(self.info[idx])
        return [pick(self.info[i]) for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.info)

    def __repr__(self) -> str:
        return (f"FeatureInfo(out_indices={self.out_indices}, channels={self.channels()}, "
                f"reduction={self.reduction()}, modules={self.module_name()})")


# --------------------------------------------------------------------------------------------
# wrapper configuration


def resolve_feature_cfg(model: nn.Module, feature_cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The wrapper settings of ``model``: defaults, its class's ``feature_cfg``, then ``feature_cfg``."""
    cfg = dict(DEFAULT_FEATURE_CFG)
    cfg.update(getattr(model, "feature_cfg", None) or {})
    cfg.update(feature_cfg or {})
    return cfg


_WRAPPER_KWARGS = ("flatten_sequential", "norm", "prune")


def create_feature_model(
    model: nn.Module,
    *,
    feature_cfg: Mapping[str, Any] | None = None,
    out_indices: Indices = None,
    feature_cls: str | None = None,
    output_fmt: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Wrap ``model`` for ``features_only``.

    Args:
        feature_cfg: the architecture's override of the class's ``feature_cfg`` (keys
            ``feature_cls``, ``flatten_sequential``, ``out_indices``, ``output_fmt``).
        out_indices: levels to return: an int (the last ``n``) or indices; default the
            architecture's (``feature_cfg``, ``model.default_out_indices``) or every level.
        feature_cls: ``'list'``, ``'dict'``, ``'getter'`` or ``'hook'``; default the family's.
        output_fmt: ``'NCHW'`` / ``'NHWC'`` (what the family's ``forward_intermediates``
            supports); default the model's native layout (``model.output_fmt``) or NCHW.
        **kwargs: ``flatten_sequential`` (list/dict/hook), ``norm`` (getter), ``prune`` (getter).
    """
    unknown = sorted(set(kwargs) - set(_WRAPPER_KWARGS))
    if unknown:
        raise TypeError(f"features_only got unexpected argument(s) {', '.join(map(repr, unknown))}; "
                        f"wrapper arguments: feature_cls, output_fmt, out_indices, {', '.join(_WRAPPER_KWARGS)}")
    if not hasattr(model, "forward_intermediates") or not getattr(model, "feature_info", None):
        raise TypeError(f"{type(model).__name__} has no feature maps (forward_intermediates / feature_info); "
                        "features_only is unsupported")
    cfg = resolve_feature_cfg(model, feature_cfg)
    family_cls = cfg["feature_cls"]
    family_default = feature_cls is None
    if feature_cls is None:
        feature_cls = family_cls
    elif feature_cls not in FEATURE_CLS_CHOICES and feature_cls != family_cls:
        raise ValueError(f"feature_cls must be one of {', '.join(map(repr, FEATURE_CLS_CHOICES))}, got {feature_cls!r}")
    if out_indices is None:
        out_indices = cfg.get("out_indices")
    if out_indices is None:
        out_indices = default_out_indices(model)
    if output_fmt is None:
        output_fmt = cfg.get("output_fmt") or getattr(model, "output_fmt", None) or "NCHW"
    supported = getattr(model, "_output_fmts", None)
    if supported is not None and output_fmt not in supported:
        raise ValueError(f"{type(model).__name__} features support output_fmt {' or '.join(map(repr, supported))}, "
                         f"got {output_fmt!r}")
    if feature_cls in ("list", "dict", "hook"):
        cls = {"list": FeatureListNet, "dict": FeatureDictNet, "hook": FeatureHookNet}[feature_cls]
        flatten = kwargs.pop("flatten_sequential", cfg.get("flatten_sequential", False))
        if feature_cls == "hook" and family_default and cfg.get("no_rewrite"):  # the family's own wrapper
            return cls(model, out_indices, output_fmt=output_fmt, flatten_sequential=flatten, no_rewrite=True)
        return cls(model, out_indices, output_fmt=output_fmt, flatten_sequential=flatten)
    if feature_cls == "getter":
        return FeatureGetterNet(model, out_indices, output_fmt=output_fmt, norm=kwargs.get("norm", False),
                                prune=kwargs.get("prune", True))
    return family_feature_class(feature_cls)(model, out_indices, output_fmt=output_fmt)


# --------------------------------------------------------------------------------------------
# wrappers


class _LinkedModules(OrderedDict):
    """A wrapper's module table whose entries also live inside the wrapped model.

    Assigning an entry (``wrapper.stages_0 = ...``, or a helper that swaps BatchNorm layers for
    frozen ones) puts the new module in the model too, so the model's ``forward_intermediates``
    runs what the wrapper's ``state_dict`` holds.
    """

    def __setitem__(self, key: str, value: Optional[nn.Module]) -> None:
        super().__setitem__(key, value)
        link = self.__dict__.get("links", {}).get(key)  # absent while unpickling
        if link is not None:
            container, name = link
            container._modules[name] = value


def _module_entries(model: nn.Module, flatten_sequential: bool) -> list[tuple[str, str, nn.Module, str]]:
    """(wrapper name, dotted path, parent, name in parent) of the model's top-level children, with
    ``nn.Sequential`` children replaced by theirs when ``flatten_sequential``."""
    entries = []
    for name, child in model.named_children():
        if flatten_sequential and isinstance(child, nn.Sequential):
            for sub, _ in child.named_children():
                entries.append((f"{name}_{sub}", f"{name}.{sub}", child, sub))
        else:
            entries.append((name, name, model, name))
    return entries


def _entry_of(entries: Sequence[tuple[str, str, nn.Module, str]], module: str) -> int:
    """Position of the entry that produces feature module ``module`` (dotted name)."""
    if not module:  # a level without a module of its own (e.g. an input-side map): the first child
        return 0
    for i, (_, path, _, _) in enumerate(entries):
        if module == path or module.startswith(path + "."):
            return i
    inside = [i for i, (_, path, _, _) in enumerate(entries) if path.startswith(module + ".")]
    if inside:  # a flattened Sequential as a whole
        return inside[-1]
    raise ValueError(f"feature module {module!r} is not among the model's children")


class _FeatureNet(nn.Module):
    """What every wrapper shares: ``feature_info``, ``return_layers``, cfgs, train mode."""

    def _init_common(self, model: nn.Module, take: Sequence[int], output_fmt: str) -> None:
        info = FeatureInfo(model.feature_info, list(take))
        self.feature_info = info
        self.out_indices = info.out_indices
        self.output_fmt = output_fmt
        # levels that still exist after pruning: up to the deepest requested one
        self._num_levels = max(take) + 1
        self._level_of = {}
        for i, entry in enumerate(info.info[:self._num_levels]):
            self._level_of[entry["module"]] = i
            self._level_of.setdefault(entry["module"].replace(".", "_"), i)
        self.return_layers = {info.info[i]["module"]: info.info[i]["module"] for i in info.out_indices}
        self.pretrained_cfg = getattr(model, "pretrained_cfg", None)
        self.default_cfg = getattr(model, "default_cfg", self.pretrained_cfg)

    # ``return_layers``: module name -> output key; assigning it changes which levels come out
    @property
    def return_layers(self) -> dict[str, Any]:
        return {name: key for _, name, key in self._returns}

    @return_layers.setter
    def return_layers(self, layers: Mapping[str, Any]) -> None:
        known = {f["module"] for f in self.feature_info.info}
        known |= {m.replace(".", "_") for m in known}
        returns = []
        for name, key in layers.items():
            if name not in known:
                raise ValueError(f"{name!r} is not a feature module; known: {[f['module'] for f in self.feature_info.info]}")
            level = self._level_of.get(name)
            if level is not None:  # levels past the pruned depth are gone, as in the reference
                returns.append((level, name, key))
        self._returns = sorted(returns, key=lambda r: r[0])

    def _levels(self) -> list[int]:
        return [level for level, _, _ in self._returns]

    def _intermediates(self, x: torch.Tensor, **kwargs: Any) -> list[torch.Tensor]:
        levels = self._levels()
        if not levels:
            return []
        return self.model.forward_intermediates(x, indices=levels, output_fmt=self.output_fmt,
                                                intermediates_only=True, **kwargs)

    def train(self, mode: bool = True) -> "_FeatureNet":
        super().train(mode)
        self.model.training = mode
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)


class FeatureDictNet(_FeatureNet):
    """``forward(x)`` returns an ordered dict of maps keyed by module name (``return_layers``).

    The state_dict holds the model's top-level children up to the one producing the deepest
    requested level; with ``flatten_sequential`` children of ``nn.Sequential`` containers take
    their place as ``<container>_<name>``. Parameters and buffers owned by the model itself come
    first, as in the model's own state_dict.
    """

    def __init__(self, model: nn.Module, out_indices: Indices = None, output_fmt: str | None = None,
                 flatten_sequential: bool = False) -> None:
        super().__init__()
        if out_indices is None:
            out_indices = default_out_indices(model)
        take, _ = feature_take_indices(len(model.feature_info), out_indices)
        model.prune_intermediate_layers(take, prune_head=True)
        output_fmt = output_fmt or getattr(model, "output_fmt", None) or "NCHW"
        entries = _module_entries(model, flatten_sequential)
        last = max(_entry_of(entries, model.feature_info[i]["module"]) for i in take)
        table = _LinkedModules()
        table.links = {}
        for name, _, parent, key in entries[:last + 1]:
            table[name] = parent._modules[key]
            table.links[name] = (parent, key)
        object.__setattr__(self, "model", model)  # not a submodule: the table holds its modules
        self._modules = table
        self._parameters = model._parameters
        self._buffers = model._buffers
        self._non_persistent_buffers_set = model._non_persistent_buffers_set
        self.flatten_sequential = flatten_sequential
        self._init_common(model, take, output_fmt)

    def _collect(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._intermediates(x)

    def forward(self, x: torch.Tensor) -> "OrderedDict[Any, torch.Tensor]":
        return OrderedDict((key, m) for (_, _, key), m in zip(self._returns, self._collect(x)))


class FeatureListNet(FeatureDictNet):
    """:class:`FeatureDictNet` whose ``forward`` returns the maps as a list, shallowest first."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        return list(self._collect(x))


class FeatureHookNet(FeatureDictNet):
    """The :class:`FeatureListNet` layout; the maps are the feature modules' outputs, caught by
    forward hooks while the model runs (tuples give their first element; 4-D outputs are put in
    ``output_fmt``). ``forward`` returns a list.

    ``no_rewrite=True`` (``feature_cfg`` key; NASNet, PNASNet): the reference's layout for models
    it does not split into modules: the model (head removed) nested whole as ``body``.
    """

    def __init__(self, model: nn.Module, out_indices: Indices = None, output_fmt: str | None = None,
                 flatten_sequential: bool = False, no_rewrite: bool = False) -> None:
        if not no_rewrite:
            super().__init__(model, out_indices, output_fmt=output_fmt, flatten_sequential=flatten_sequential)
            return
        nn.Module.__init__(self)
        if out_indices is None:
            out_indices = default_out_indices(model)
        take, _ = feature_take_indices(len(model.feature_info), out_indices)
        model.prune_intermediate_layers(take, prune_head=True)
        self.body = model
        object.__setattr__(self, "model", model)  # the same module, for the shared wrapper code
        self.flatten_sequential = False
        self._init_common(model, take, output_fmt or getattr(model, "output_fmt", None) or "NCHW")

    def _collect(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = self._levels()
        if not levels:
            return []
        caught: dict[int, torch.Tensor] = {}
        handles = []

        def catcher(level: int):
            def hook(module: nn.Module, args: Any, output: Any) -> None:
                caught[level] = output[0] if isinstance(output, (tuple, list)) else output
            return hook

        for level in levels:
            module = self.model.get_submodule(self.feature_info.info[level]["module"])
            handles.append(module.register_forward_hook(catcher(level)))
        try:
            self.model.forward_intermediates(x, indices=[max(levels)], intermediates_only=True)
        finally:
            for h in handles:
                h.remove()
        missing = [self.feature_info.info[i]["module"] for i in levels if i not in caught]
        if missing:
            raise RuntimeError(f"feature modules {missing} did not run as modules; use feature_cls='list'")
        native = getattr(self.model, "output_fmt", None) or "NCHW"
        out = []
        for level in levels:
            y = caught[level]
            if y.ndim == 4 and native != self.output_fmt:
                y = y.permute(0, 2, 3, 1) if native == "NCHW" else y.permute(0, 3, 1, 2).contiguous()
            out.append(y)
        return out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        return self._collect(x)


class FeatureGetterNet(_FeatureNet):
    """The pruned model nested as ``model``; ``forward`` returns its ``forward_intermediates``
    maps at the selected levels (a list). ``norm=True`` keeps the final norm and applies it."""

    def __init__(self, model: nn.Module, out_indices: Indices = None, output_fmt: str | None = None,
                 norm: bool = False, prune: bool = True) -> None:
        super().__init__()
        if out_indices is None:
            out_indices = default_out_indices(model)
        take, _ = feature_take_indices(len(model.feature_info), out_indices)
        if prune:
            model.prune_intermediate_layers(take, prune_norm=not norm, prune_head=True)
        self.model = model
        self.norm = norm
        self._init_common(model, take, output_fmt or getattr(model, "output_fmt", None) or "NCHW")
        modules = [model.feature_info[i]["module"] for i in take]
        if len(set(modules)) < len(modules):  # one module, several levels (CrossViT: one per branch)
            self._returns = sorted((i, m, m) for i, m in zip(take, modules))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._intermediates(x, norm=self.norm)

    def train(self, mode: bool = True) -> "FeatureGetterNet":
        return nn.Module.train(self, mode)


class PrunedFeatureNet(_FeatureNet):
    """A family-specific wrapper: the pruned model (head removed) under its own keys; ``forward``
    returns the maps at the selected levels (a list). Families name it (``EfficientNetFeatures``,
    ...) through ``feature_cfg``; :func:`family_feature_class` makes the class of that name."""

    def __init__(self, model: nn.Module, out_indices: Indices = None, output_fmt: str | None = None) -> None:
        super().__init__()
        if out_indices is None:
            out_indices = default_out_indices(model)
        take, _ = feature_take_indices(len(model.feature_info), out_indices)
        model.prune_intermediate_layers(take, prune_head=True)
        # share the model's tables instead of nesting it: the keys are the model's own
        object.__setattr__(self, "model", model)
        self._modules = model._modules
        self._parameters = model._parameters
        self._buffers = model._buffers
        self._non_persistent_buffers_set = model._non_persistent_buffers_set
        self._init_common(model, take, output_fmt or getattr(model, "output_fmt", None) or "NCHW")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._intermediates(x)


class EfficientNetFeatures(PrunedFeatureNet):
    """EfficientNet-family features: the model's stem and kept blocks under their own names."""


class MobileNetV3Features(PrunedFeatureNet):
    """MobileNetV3-family features: the model's stem and kept blocks under their own names."""


class HighResolutionNetFeatures(PrunedFeatureNet):
    """HRNet-family features: the model's own keys minus the classification head."""


def family_feature_class(name: str) -> type:
    """The :class:`PrunedFeatureNet` subclass called ``name`` (created on first use)."""
    cls = globals().get(name)
    if isinstance(cls, type) and issubclass(cls, PrunedFeatureNet):
        return cls
    if not name.isidentifier() or cls is not None:
        raise ValueError(f"feature_cls {name!r} is neither one of {FEATURE_CLS_CHOICES} nor a usable class name")
    cls = type(name, (PrunedFeatureNet,), {"__module__": __name__, "__doc__": f"{name}: {PrunedFeatureNet.__doc__}"})
    globals()[name] = cls  # importable by name, so wrappers pickle
    return cls
