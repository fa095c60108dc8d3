"""TensorFlow for carjax's side jobs, kept off the accelerators JAX trains on.

carjax uses TensorFlow only on the host: to read TFDS datasets and to export a SavedModel.
A GPU build of TensorFlow would otherwise claim most of every visible GPU's memory the
first time it runs an op, leaving JAX (which preallocates too) out of memory. Every carjax
import of TensorFlow or TFDS goes through `import_tensorflow()`, which hides all but the
CPU from TensorFlow before any TensorFlow op can run.
"""

from __future__ import annotations

from absl import logging

from carjax import extras


def import_tensorflow(extra: str = "export", purpose: str = "This command"):
  """The `tensorflow` module, with GPUs and TPUs hidden from it (idempotent).

  Without TensorFlow installed: `extras.MissingExtraError` naming `extra` and `purpose`.
  """
  tf = extras.import_optional("tensorflow", extra, purpose)
  try:
    # A no-op when nothing changes, so calling it on every import is safe.
    tf.config.set_visible_devices(tf.config.list_physical_devices("CPU"))
  except RuntimeError as e:
    # TensorFlow's devices were initialised before carjax imported it (by the caller's
    # own TensorFlow code); hiding them now is impossible, so say so.
    logging.warning("TensorFlow already initialised its devices (%s); it may hold "
                    "accelerator memory that JAX needs. Import carjax before running any "
                    "TensorFlow op.", e)
  return tf
