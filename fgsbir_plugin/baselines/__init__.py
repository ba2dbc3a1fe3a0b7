"""Baselines compared against DSSA in the same harness (each an embedder with ``forward(x, modality=None)``)."""

from .clip import CLIPImageEmbedder

__all__ = ["CLIPImageEmbedder"]
