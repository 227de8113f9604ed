"""Sharing models in the hub layout: ``save_pretrained``, ``push_to_hub`` and reading such folders.

A shared model is a folder (or a Hugging Face Hub repo) holding three files, laid out as the
reference library's hub repos are, so that it loads unchanged there, in the transformers wrapper
that reads that layout, and in visionzoo (``create_model("local-dir:PATH")`` /
``create_model("hf-hub:org/name")``):

* ``config.json``: ``architecture``, ``num_classes``, ``num_features``, ``global_pool`` (when the model
  names its pooling), ``label_names`` (and ``label_descriptions``), ``model_args`` (constructor
  arguments such as ``in_chans``) and ``pretrained_cfg`` (preprocessing, head layout, licence);
* ``model.safetensors``: the state_dict, with the model's own key names;
* ``README.md``: a model card with the licence, data config, training recipe and metrics.

Field by field: docs/sharing.md.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["save_pretrained", "push_to_hub", "hub_config", "model_card", "resolve_local_dir", "read_local_dir",
           "cfg_from_hub_config", "run_recipe", "save_training_run", "CONFIG_NAME", "WEIGHTS_NAME", "CARD_NAME",
           "HEAD_KEY"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LEGACY_WEIGHTS_NAME = "pytorch_model.bin"
CARD_NAME = "README.md"
# visionzoo's own config key for a head the reference library has no argument for (train --head mlp)
HEAD_KEY = "visionzoo_head"
# files push_to_hub uploads (a run folder's checkpoints stay local)
UPLOAD_PATTERNS = (CONFIG_NAME, WEIGHTS_NAME, LEGACY_WEIGHTS_NAME, CARD_NAME)

# cfg keys that say where the weights came from: a shared folder is its own source
_SOURCE_KEYS = ("architecture", "file", "hf_hub_id", "hf_hub_filename", "url", "sha256", "package", "package_file",
                "converter", "label_names", "label_descriptions")
# data-config keys copied into pretrained_cfg; test-time sizes of the starting weights no longer apply
_DATA_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")
_TEST_KEYS = ("test_input_size", "test_crop_pct")
# licence identifiers the Hub's model-card metadata accepts as they are; others become "other"
_HUB_LICENSES = frozenset({
    "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-4.0", "cc0-1.0", "gpl-3.0", "lgpl-3.0", "agpl-3.0",
    "openrail", "unknown", "other",
})


def _json_value(v: Any) -> Any:
    """Plain JSON: tuples -> lists, NaN/inf -> None, tensors and numpy scalars -> numbers."""
    if isinstance(v, Mapping):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 0) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _head_info(model: Any) -> dict[str, Any] | None:
    """The MLP head of a ``visionzoo train --head mlp`` model, as its config entry (else None)."""
    from ..train.model import MlpHeadClassifier

    if not isinstance(model, MlpHeadClassifier):
        return None
    return {"type": "mlp", "hidden": int(model.hidden), "dropout": float(model.head[2].p)}


def _backbone(model: Any) -> Any:
    return model.backbone if _head_info(model) else model


def _in_chans(model: Any, cfg: Mapping[str, Any]) -> int:
    from ..data.config import _model_in_chans

    return int(_model_in_chans(_backbone(model), cfg) or (cfg.get("input_size") or (3,))[0])


def hub_config(
    model: Any,
    *,
    label_names: Sequence[str] | None = None,
    label_descriptions: Mapping[str, str] | None = None,
    model_args: Mapping[str, Any] | None = None,
    data_config: Mapping[str, Any] | None = None,
    license: str | None = None,
    architecture: str | None = None,
) -> dict[str, Any]:
    """The ``config.json`` dict of ``model`` (see the module docstring and docs/sharing.md).

    ``label_names`` default to the model cfg's; ``data_config`` (what the model was trained or
    evaluated with) replaces the cfg's preprocessing; ``license`` defaults to the cfg's, else
    ``"unknown"``. ``in_chans`` other than 3 is recorded in ``model_args``. ``architecture`` names
    a model that has no cfg (a user model registered without one).
    """
    from .cfg import PretrainedCfg

    cfg_obj = getattr(model, "pretrained_cfg", None)
    cfg_obj = cfg_obj if isinstance(cfg_obj, PretrainedCfg) else PretrainedCfg.from_dict(dict(cfg_obj or {}))
    arch = cfg_obj.architecture or architecture
    if not arch:
        raise ValueError("the model has no pretrained_cfg.architecture: create it with visionzoo.create_model "
                         "or pass architecture=")
    num_classes = int(getattr(model, "num_classes"))
    if label_names is None:
        label_names = cfg_obj.label_names
    if label_names is not None:
        label_names = [str(n) for n in label_names]
        if len(label_names) != num_classes:
            raise ValueError(f"{len(label_names)} label_names for a model with {num_classes} classes")
    cfg = {k: v for k, v in cfg_obj.to_dict().items() if k not in _SOURCE_KEYS}
    in_chans = _in_chans(model, cfg)
    if data_config:
        for key in _TEST_KEYS:
            cfg.pop(key, None)
        cfg.update({k: data_config[k] for k in _DATA_KEYS if data_config.get(k) is not None})
    if cfg.get("input_size"):
        cfg["input_size"] = [in_chans, *list(cfg["input_size"])[1:]]
    cfg["num_classes"] = num_classes
    if cfg_obj.label_offset and num_classes != cfg_obj.num_classes:
        cfg.pop("label_offset", None)  # the offset described the old head
    cfg["license"] = license or cfg_obj.license or "unknown"
    args = dict(model_args or {})
    if in_chans != 3:
        args.setdefault("in_chans", in_chans)
    config: dict[str, Any] = {"architecture": arch, "num_classes": num_classes,
                              "num_features": int(getattr(model, "num_features"))}
    pool = getattr(_backbone(model), "global_pool", None)
    if isinstance(pool, str):
        config["global_pool"] = pool
    if label_names is not None:
        config["label_names"] = label_names
    if label_descriptions:
        config["label_descriptions"] = dict(label_descriptions)
    if args:
        config["model_args"] = args
    config["pretrained_cfg"] = cfg
    head = _head_info(model)
    if head:
        config[HEAD_KEY] = head
    return _json_value(config)


def _hub_license(license: str) -> list[str]:
    """Model-card metadata lines for a licence (custom ones as ``other`` + ``license_name``)."""
    lic = license.lower()
    if lic in _HUB_LICENSES:
        return [f"license: {lic}"]
    return ["license: other", f"license_name: {lic}"]


def _table(rows: Mapping[str, Any]) -> list[str]:
    lines = ["| | |", "|---|---|"]
    for k, v in rows.items():
        v = _json_value(v)
        text = json.dumps(v) if isinstance(v, (list, dict)) else ("-" if v is None else str(v))
        lines.append(f"| {k} | {text.replace('|', '/')} |")
    return lines


def model_card(
    config: Mapping[str, Any],
    *,
    name: str | None = None,
    recipe: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    num_params: int | None = None,
    base_model: str | None = None,
) -> str:
    """``README.md`` text: Hub metadata header, then model details, data config, recipe, metrics, usage."""
    cfg = config.get("pretrained_cfg", {})
    license = str(cfg.get("license") or "unknown")
    arch = config["architecture"]
    title = name or arch
    head = config.get(HEAD_KEY)
    meta = ["---", "tags:", "- image-classification", "- timm", "- visionzoo", "library_name: timm",
            *_hub_license(license)]
    if base_model:
        meta.append(f"base_model: {base_model}")
    meta.append("---")
    labels = config.get("label_names")
    shown = ", ".join(labels[:20]) + (f", ... ({len(labels)} in all)" if len(labels) > 20 else "") if labels else None
    details = {"architecture": arch + (f" (starting weights: {base_model})" if base_model else ""),
               "classes": f"{config['num_classes']}" + (f": {shown}" if shown else ""),
               "num_features": config.get("num_features"),
               "params (M)": round(num_params / 1e6, 3) if num_params else None,
               "licence": license + (" (the source records none: check before you ship)" if license == "unknown"
                                     else ""),
               "model_args": config.get("model_args") or {}}
    if head:
        details["head"] = f"visionzoo MLP head ({head['hidden']} hidden, dropout {head['dropout']})"
    out = [*meta, f"# Model card for {title}", "",
           f"An image classifier ({arch}) saved by visionzoo in the hub layout: `config.json` + "
           f"`{WEIGHTS_NAME}`.", "", "## Model details", "", *_table(details), "",
           "## Data config", "", "The preprocessing the weights expect (from `pretrained_cfg`):", "",
           *_table({k: cfg.get(k) for k in _DATA_KEYS if k in cfg}), "", "## Training", ""]
    out += [*(_table(recipe) if recipe else ["No training recipe was recorded."]), "", "## Metrics", ""]
    out += [*(_table(metrics) if metrics else ["No metrics were recorded."]), "", "## Usage", "", "```python",
            "import visionzoo", "", 'model = visionzoo.create_model("local-dir:PATH", pretrained=True).eval()'
            "  # or \"hf-hub:ORG/NAME\"", "```", ""]
    if head:
        out += ["The MLP head is a visionzoo head: other libraries load the backbone keys only.", ""]
    else:
        out += ["The same folder or repo loads in the reference library (`create_model(\"hf-hub:ORG/NAME\", "
                "pretrained=True)`) and in transformers' wrapper for its layout.", ""]
    return "\n".join(out)


def _write_atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _plain_state_dict(model: Any) -> dict[str, Any]:
    """CPU, contiguous tensors; a storage shared by several keys is copied (safetensors refuses sharing)."""
    out, seen = {}, set()
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu").contiguous()
        if t.numel():
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen:
                t = t.clone()
            seen.add(ptr)
        out[k] = t
    return out


def save_pretrained(
    model: Any,
    save_directory: str | os.PathLike,
    *,
    label_names: Sequence[str] | None = None,
    label_descriptions: Mapping[str, str] | None = None,
    model_args: Mapping[str, Any] | None = None,
    data_config: Mapping[str, Any] | None = None,
    license: str | None = None,
    recipe: Mapping[str, Any] | str | os.PathLike | None = None,
    metrics: Mapping[str, Any] | None = None,
    name: str | None = None,
    model_card_text: bool = True,
    architecture: str | None = None,
) -> Path:
    """Write ``model`` as a hub-layout folder: ``config.json``, ``model.safetensors``, ``README.md``.

    The folder loads with ``create_model("local-dir:DIR", pretrained=True)``, uploads with
    :func:`push_to_hub`, and loads unchanged in the reference library and transformers' wrapper.

    Args:
        model: a visionzoo model (or a ``visionzoo train --head mlp`` model).
        save_directory: created if missing; files already there are replaced.
        label_names: one name per class (default: the model cfg's); ``predict`` prints them.
        label_descriptions: optional ``{label: description}``.
        model_args: extra constructor arguments to record (``in_chans`` is found from the model).
        data_config: the preprocessing used in training (replaces the cfg's size/crop/mean/std).
        license: defaults to the cfg's licence, else ``"unknown"``.
        recipe: the training recipe, a dict or the path of a ``recipe.json``.
        metrics: e.g. ``{"val_top1": 97.5}``; shown in the model card.
        name: title of the model card (default: the folder name).
        model_card_text: write ``README.md`` (leave an existing card alone with False).
        architecture: the registered name, for a model without a cfg (built-in models know theirs).

    Returns:
        The folder's path.
    """
    from safetensors.torch import save_file

    if recipe is not None and not isinstance(recipe, Mapping):
        recipe = json.loads(Path(recipe).read_text(encoding="utf-8"))
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    config = hub_config(model, label_names=label_names, label_descriptions=label_descriptions, model_args=model_args,
                        data_config=data_config, license=license, architecture=architecture)
    _write_atomic(out / CONFIG_NAME, lambda p: p.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8"))
    state = _plain_state_dict(model)
    _write_atomic(out / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    if model_card_text:
        cfg = getattr(model, "pretrained_cfg", None)
        # fine-tuned from published weights: the card names them (Hub metadata wants a repo id)
        base = getattr(cfg, "hf_hub_id", None) if recipe and recipe.get("pretrained") else None
        card = model_card(config, name=name or out.resolve().name, recipe=recipe, metrics=metrics,
                          num_params=sum(p.numel() for p in model.parameters()), base_model=base)
        _write_atomic(out / CARD_NAME, lambda p: p.write_text(card, encoding="utf-8"))
    return out


def save_training_run(model: Any, run_dir: str | os.PathLike, *, label_names: Sequence[str],
                      data_config: Mapping[str, Any], options: Mapping[str, Any],
                      metrics: Mapping[str, Any] | None = None) -> Path | None:
    """End of ``visionzoo train``: the final weights as ``RUN/model`` in the hub layout.

    ``options`` are the run's options (``TrainConfig.to_dict()``), shown with the resolved values of
    the run's ``recipe.json`` as the recipe. The checkpoints are already written, so a failure here
    is a warning on stderr (and ``None``), never a failed run.
    """
    from ..registry import split_model_name_tag

    model_name = str(options.get("model") or "")
    arch = split_model_name_tag(model_name)[0] if model_name and ":" not in model_name else None
    try:
        folder = save_pretrained(model, Path(run_dir) / "model", label_names=label_names, data_config=data_config,
                                 recipe=run_recipe(run_dir, options), metrics=metrics, architecture=arch)
        print(f"shareable model folder: {folder} (--model local-dir:{folder}; visionzoo push-to-hub {folder} ORG/NAME)",
              flush=True)
        return folder
    except Exception as e:  # noqa: BLE001 - the run's checkpoints are safe; say why the folder is missing
        print(f"warning: could not write the shareable folder {Path(run_dir) / 'model'}: {type(e).__name__}: {e}",
              file=sys.stderr)
        return None


def run_recipe(run_dir: str | os.PathLike, options: Mapping[str, Any]) -> dict[str, Any]:
    """How a run was trained: its ``options`` updated with the resolved values of the run's
    ``recipe.json`` (learning rate found, augmentation chosen, ...) when the training wrote one."""
    recipe = dict(options)
    path = Path(run_dir) / "recipe.json"
    if path.is_file():
        try:
            recipe.update(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            pass
    return recipe


def resolve_local_dir(path: str | os.PathLike) -> Path:
    """The hub-layout folder at ``path``: the folder itself, or its ``model/`` (a training run's folder)."""
    root = Path(path).expanduser()
    for cand in (root, root / "model"):
        if (cand / CONFIG_NAME).is_file():
            return cand
    if not root.exists():
        raise FileNotFoundError(f"local-dir: {root} does not exist")
    raise FileNotFoundError(f"local-dir: {root} holds no {CONFIG_NAME} (nor does {root / 'model'}); "
                            "write one with visionzoo.save_pretrained(model, DIR)")


def read_local_dir(path: str | os.PathLike) -> tuple[dict[str, Any], Path | None]:
    """``(config, weights file or None)`` of a hub-layout folder (see :func:`resolve_local_dir`)."""
    folder = resolve_local_dir(path)
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{folder / CONFIG_NAME} is not valid JSON: {e}") from e
    weights = next((folder / n for n in (WEIGHTS_NAME, LEGACY_WEIGHTS_NAME) if (folder / n).is_file()), None)
    return config, weights


def cfg_from_hub_config(config: Mapping[str, Any], source: str, **weights: Any
                        ) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(architecture, pretrained cfg dict, model_args)`` from a hub-layout ``config.json``.

    As in the reference library: the top-level ``num_classes``, ``label_names`` and
    ``label_descriptions`` override ``pretrained_cfg``'s; an old flat config (no
    ``pretrained_cfg``) is read as the cfg itself. ``weights`` (``file=`` or ``hf_hub_id=``) is
    where the cfg's weights come from; ``source`` names the folder or repo in errors.
    """
    arch = config.get("architecture")
    if not arch or not isinstance(arch, str):
        raise ValueError(f"{source}: config.json has no 'architecture'")
    if "pretrained_cfg" in config:
        cfg = dict(config.get("pretrained_cfg") or {})
    else:
        cfg = {k: v for k, v in config.items() if k not in ("architecture", "num_features", "model_args", HEAD_KEY)}
        if "labels" in cfg:  # the old name of label_names
            cfg["label_names"] = cfg.pop("labels")
    for key in ("num_classes", "label_names", "label_descriptions"):
        if key in config:
            cfg[key] = config[key]
    cfg.pop("architecture", None)
    cfg.update(weights)
    cfg.setdefault("license", "unknown")
    return arch, cfg, dict(config.get("model_args") or {})


def push_to_hub(
    model_or_dir: Any,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Add model (visionzoo)",
    revision: str | None = None,
    create_pr: bool = False,
    api: Any = None,
    **save_kwargs: Any,
) -> dict[str, Any]:
    """Upload a model, or a folder written by :func:`save_pretrained`, to a Hugging Face Hub repo.

    Goes through ``huggingface_hub.HfApi``: ``create_repo(exist_ok=True)``, ``create_branch`` for a
    ``revision``, then one ``upload_folder`` commit of ``config.json``, the weights and
    ``README.md`` (a run folder's checkpoints stay local). A model is saved to a temporary folder
    first (``save_kwargs`` go to :func:`save_pretrained`). ``api`` replaces ``HfApi(token=token)``.

    Returns:
        ``{"repo_id", "url", "commit_url", "folder", "files"}``.
    """
    import torch.nn as nn

    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must be 'org/name', got {repo_id!r}")
    if isinstance(model_or_dir, nn.Module):
        with tempfile.TemporaryDirectory(prefix="visionzoo-push-") as tmp:
            folder = save_pretrained(model_or_dir, Path(tmp) / repo_id.split("/")[1], **save_kwargs)
            return push_to_hub(folder, repo_id, private=private, token=token, commit_message=commit_message,
                               revision=revision, create_pr=create_pr, api=api)
    if save_kwargs:
        raise TypeError(f"push_to_hub of a folder takes no save arguments: {', '.join(save_kwargs)}")
    folder = resolve_local_dir(model_or_dir)
    files = [n for n in UPLOAD_PATTERNS if (folder / n).is_file()]
    if WEIGHTS_NAME not in files and LEGACY_WEIGHTS_NAME not in files:
        raise FileNotFoundError(f"{folder} holds no {WEIGHTS_NAME}: write it with visionzoo.save_pretrained")
    if api is None:
        from huggingface_hub import HfApi

        from .sources import offline_mode

        why = offline_mode(hub=True)
        if why:
            raise ConnectionError(f"cannot push to the Hugging Face Hub: {why}")
        api = HfApi(token=token)
    repo = api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
    repo_id = getattr(repo, "repo_id", None) or repo_id
    if revision:
        api.create_branch(repo_id=repo_id, branch=revision, exist_ok=True, repo_type="model")
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                               commit_message=commit_message, revision=revision, create_pr=create_pr,
                               allow_patterns=list(files))
    return {"repo_id": repo_id, "url": str(repo) if repo is not None else None,
            "commit_url": getattr(commit, "pr_url", None) or getattr(commit, "commit_url", None) or str(commit),
            "folder": str(folder), "files": files}
