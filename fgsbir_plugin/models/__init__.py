"""DSSA model family, registered with timm on import."""
