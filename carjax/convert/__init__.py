"""Pretrained-weight conversion into carjax's EfficientNet.

Readers (no PyTorch needed): `torch_legacy` (torch.save legacy/zip, safetensors),
`keras_h5` (Keras .h5 / .weights.h5). Name maps: `efficientnet_names`.
Converters: `converters`. On-disk format: `carjax.checkpoint` (save_converted, load_converted).
"""

from carjax.convert.mapping import ConversionError
from carjax.convert.converters import SOURCES, convert, convert_weights
from carjax.checkpoint import load_converted, save_converted

__all__ = ['ConversionError', 'SOURCES', 'convert', 'convert_weights',
           'load_converted', 'save_converted']
