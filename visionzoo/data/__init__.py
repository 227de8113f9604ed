"""Data: config resolved from a model's pretrained cfg, PIL/torch transforms, class names, images."""
