"""Deployment: export to ONNX / TorchScript / exported programs and fast CPU inference.

* :mod:`visionzoo.deploy.export`: the exporter with its parity check (also ``visionzoo.export``).
* :mod:`visionzoo.deploy.inference`: :func:`optimize`, BatchNorm folding (also ``visionzoo.inference``).
* :mod:`visionzoo.deploy.allocator`: glibc malloc thresholds that keep activation memory between
  calls (``optimize`` sets them).
* :mod:`visionzoo.deploy.compare`: the output comparison both use (exported file or optimized
  model against eager).
"""
