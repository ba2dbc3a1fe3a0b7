"""Gallery search with faiss: cosine, squared L2, and exact HOLEF as a maximum-inner-product search."""

from .index import GalleryIndex, holef_gallery_vectors, holef_query_vectors
from .knn import GalleryKNN

__all__ = ["GalleryIndex", "GalleryKNN", "holef_gallery_vectors", "holef_query_vectors"]
