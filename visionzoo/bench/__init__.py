"""Benchmarking and model selection: ``visionzoo benchmark`` / ``visionzoo select``.

* :func:`visionzoo.bench.measure.benchmark` measures parameters, GMACs, activations, inference
  latency/throughput and training step time and peak memory, appending results as they complete.
* :func:`visionzoo.bench.select.select` joins the published ImageNet results with measurements
  (cached, run on demand) and answers "which model for this budget", with a Pareto front.
"""
