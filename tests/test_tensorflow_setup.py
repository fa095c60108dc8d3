"""TensorFlow, imported for export or TFDS, never sees the accelerators JAX trains on.

On this CPU-only machine TensorFlow has no GPU to take, so the test checks the mechanism:
every carjax path into TensorFlow hides all but the CPU before TensorFlow can run an op.
"""

import subprocess
import sys

from tests.conftest import REPO_ROOT

_SCRIPT = r"""
import tensorflow as tf
calls = []
real = tf.config.set_visible_devices
def recording(devices, device_type=None):
  calls.append(sorted({d.device_type for d in devices}))
  return real(devices, device_type)
tf.config.set_visible_devices = recording

import carjax.export.saved_model  # The SavedModel/TFLite exporter.
assert calls == [["CPU"]], calls
from carjax.data import tfds_source
try:
  tfds_source.TfdsSource("no_such_dataset_for_carjax")  # The TFDS reader.
except ValueError:
  pass
assert calls == [["CPU"], ["CPU"]], calls
assert {d.device_type for d in tf.config.get_visible_devices()} == {"CPU"}
print("ok")
"""


def test_export_and_tfds_hide_accelerators_from_tensorflow():
  proc = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().endswith("ok")
