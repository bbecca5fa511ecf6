"""bihmf: reproducible benchmark pipeline for Bidirectional Hierarchical Multimodal Fusion."""

__version__ = "0.1.0"
