"""Data: image sources, robust decoding, decoded-array caching, dataset preparation."""
