"""Configuration, layer descriptions and the command line (pure Python: no Amaranth, no NumPy)."""

from .config import AcceleratorConfig, PEConfig, PRESETS, preset, resolve_config
from .layer import ConvLayer

__all__ = ["AcceleratorConfig", "PEConfig", "PRESETS", "preset", "resolve_config", "ConvLayer"]
