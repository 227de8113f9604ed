"""Fine-tuning: training loop, optimizers with layer decay, schedules, EMA, mixup, checkpoints, DDP.

Python API::

    from visionzoo.train import TrainConfig, train
    result = train(TrainConfig(model="resnet18", data="DIR", epochs=3))  # lr, size, channels... from the data

The ``visionzoo train`` / ``visionzoo validate`` commands wrap :func:`train` and :func:`evaluate`.
"""
from __future__ import annotations


from .._lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "engine", "train": "engine", "evaluate": "engine", "build_datasets": "engine",
    "create_loader": "engine", "write_recipe": "engine", "lr_range_test": "lr_finder", "plot_lr_finder": "lr_finder",
    "create_optimizer": "optim", "param_groups": "optim", "param_layer_ids": "optim", "Lamb": "optim",
    "Scheduler": "scheduler", "ModelEma": "ema", "Mixup": "mixup", "SoftTargetCrossEntropy": "mixup",
    "save_checkpoint": "checkpoint", "load_training_checkpoint": "checkpoint", "ResumeError": "checkpoint",
    "build_train_model": "model", "MlpHeadClassifier": "model", "freeze_backbone": "model",
    "init_distributed": "distributed", "plot_metrics": "metrics", "write_csv": "metrics", "read_csv": "metrics",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
