"""``visionzoo.inference``: fast CPU inference (:func:`optimize`, BatchNorm folding, ...), kept
importable here; the code lives in :mod:`visionzoo.deploy.inference`.

This name is the same module object as :mod:`visionzoo.deploy.inference` (patching one patches both).
"""
from __future__ import annotations

import sys

from .deploy import inference as _impl

sys.modules[__name__] = _impl
