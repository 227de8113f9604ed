"""Pretrained weights: cfg records, sources with a cache, safe loading and adaptation."""
from .cfg import PretrainedCfg, merge_cfg
from .load import (CheckpointError, adapt_input_conv, clean_state_dict, load_checkpoint, load_pretrained,
                   load_state_dict_file)
from .sources import HashMismatchError, WeightsNotFoundError, download_url, get_cache_dir, resolve_weights_file

__all__ = ["PretrainedCfg", "merge_cfg", "CheckpointError", "adapt_input_conv", "clean_state_dict",
           "load_checkpoint", "load_pretrained", "load_state_dict_file", "HashMismatchError",
           "WeightsNotFoundError", "download_url", "get_cache_dir", "resolve_weights_file"]
