"""The exported model's TensorFlow preprocessing: its resize reproduces carjax's (PIL bicubic)."""

import numpy as np
import pytest

tf = pytest.importorskip(
    "tensorflow", reason='the export tests need the export extra: pip install -e ".[export]"')

from carjax.export import tf_preprocess  # pylint: disable=g-import-not-at-top,wrong-import-position
from carjax.data import decode
from tests import helpers


@pytest.mark.parametrize("size", [32, (24, 40)])
@pytest.mark.parametrize("mode", ["squash", "crop", "pad"])
@pytest.mark.parametrize("shape", [(45, 61), (20, 27), (97, 40), (32, 32)])
def test_resize_reproduces_pil_bicubic(mode, shape, size):
  if mode == "crop" and size != 32:
    with pytest.raises(ValueError, match="square"):
      tf_preprocess.resize_images(tf.constant(helpers.smooth_images(shape, 1, seed=3)), size,
                                  mode)
    return
  images = helpers.smooth_images(shape, 2, seed=3)
  expected = np.stack([decode.resize_to(im, size, mode) for im in images]).astype(int)
  got = tf_preprocess.resize_images(
      tf.constant(images), size, mode,
      vertical_first_rule=tf_preprocess.pillow_resamples_vertically_first()).numpy()
  assert got.shape == expected.shape
  assert np.array_equal(got, np.round(got))  # Whole grey levels, as uint8 would be.
  diff = np.abs(got - expected)
  assert diff.max() <= 1, (mode, shape, diff.max())
  assert (diff == 0).mean() >= 0.999, (mode, shape, (diff == 0).mean())
