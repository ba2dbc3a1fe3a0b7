"""fgsbir-plugin: fine-grained sketch-based image retrieval for the PyTorch ecosystem.

Importing the package registers the DSSA model family with timm, so that
``timm.create_model("dssa")`` works after ``import fgsbir_plugin``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import models  # noqa: F401  (registers the timm models)

__all__ = ["__version__", "models"]
