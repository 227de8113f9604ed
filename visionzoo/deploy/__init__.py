"""Deployment: export to ONNX / TorchScript / exported programs and fast CPU inference.

:mod:`visionzoo.deploy.compare` holds the output comparison both use (an exported file or an
optimized model against eager). :mod:`visionzoo.deploy.export` is the exporter; the inference
optimizer stays importable as :mod:`visionzoo.inference`.
"""
