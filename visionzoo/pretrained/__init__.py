"""Pretrained weights: cfg records, sources with a cache, safe loading and adaptation.

The names below are imported on first use (PEP 562), so ``import visionzoo.pretrained`` (which the
registry does for :class:`PretrainedCfg`) stays free of torch: ``list_models`` / ``list_pretrained``
only read JSON. ``load`` (torch) and ``sources`` (huggingface_hub) load when one of their names is
asked for.
"""
from __future__ import annotations


from .._lazy import lazy_exports

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "PretrainedCfg": "cfg",
    "merge_cfg": "cfg",
    "CheckpointError": "load",
    "adapt_input_conv": "load",
    "clean_state_dict": "load",
    "load_checkpoint": "load",
    "resume_checkpoint": "load",
    "load_pretrained": "load",
    "load_state_dict_file": "load",
    "LoadReport": "load",
    "HashMismatchError": "sources",
    "WeightsNotFoundError": "sources",
    "download_url": "sources",
    "get_cache_dir": "sources",
    "resolve_weights_file": "sources",
    "offline_mode": "sources",
    "offline_tags": "sources",
    "save_pretrained": "hub",
    "push_to_hub": "hub",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
