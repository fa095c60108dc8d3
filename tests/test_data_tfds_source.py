"""Tests for carjax.data.tfds_source on a tiny TFDS dataset built here (no network)."""

from __future__ import annotations

from PIL import Image
import pytest

from carjax.data import tfds_source
from carjax.data.sources import open_source


@pytest.fixture(scope="module")
def tiny_tfds_dir(tmp_path_factory):
  """A tiny TFDS dataset, prepared from images generated here (no network)."""
  tfds = pytest.importorskip("tensorflow_datasets")
  import io  # pylint: disable=g-import-not-at-top

  class CarjaxTinyCars(tfds.core.GeneratorBasedBuilder):
    """Two classes, 10 + 6 train images, 2 + 2 test images."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Image(),
              "label": tfds.features.ClassLabel(names=["Audi", "BMW"]),
              "id": tfds.features.Text(),
          }))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples({0: 10, 1: 6}),
              "test": self._generate_examples({0: 2, 1: 2}, offset=100)}

    def _generate_examples(self, counts, offset=0):
      for label, count in counts.items():
        for i in range(count):
          buffer = io.BytesIO()
          Image.new("RGB", (5, 3), (label * 200, offset + i, 0)).save(
              buffer, "PNG")
          key = f"{label}_{offset + i:03d}"
          yield key, {"image": buffer.getvalue(), "label": label, "id": key}

  data_dir = tmp_path_factory.mktemp("tfds")
  CarjaxTinyCars(data_dir=str(data_dir)).download_and_prepare()
  return data_dir


def test_tfds_source_reads_encoded_images_and_carves_val(tiny_tfds_dir):
  source = open_source("tfds:carjax_tiny_cars", tfds_data_dir=tiny_tfds_dir,
                       val_fraction=0.2)
  assert isinstance(source, tfds_source.TfdsSource)
  assert source.class_names == ("Audi", "BMW")
  assert source.splits == ("train", "val", "test")
  train, val, test = (source.records(s) for s in source.splits)
  assert len(test) == 4
  # Carved out of the 16 train images: round(10*.2)=2 Audi, round(6*.2)=1 BMW.
  assert sorted(r.label for r in val) == [0, 0, 1]
  assert len(train) == 13
  assert not {r.name for r in train} & {r.name for r in val}
  record = val[0]
  assert record.path is None and record.data[:4] == b"\x89PNG"
  assert record.name.startswith("tfds:carjax_tiny_cars/train/")
  # Deterministic.
  assert open_source("tfds:carjax_tiny_cars", tfds_data_dir=tiny_tfds_dir,
                     val_fraction=0.2).records("val") == val


def test_tfds_source_errors(tiny_tfds_dir, tmp_path):
  with pytest.raises(ValueError, match="no feature 'photo'"):
    tfds_source.TfdsSource("carjax_tiny_cars", data_dir=tiny_tfds_dir,
                           image_key="photo")
  with pytest.raises(ValueError, match="not a ClassLabel"):
    tfds_source.TfdsSource("carjax_tiny_cars", data_dir=tiny_tfds_dir,
                           label_key="id")
  with pytest.raises(ValueError, match="Unknown split 'holdout'"):
    tfds_source.TfdsSource("carjax_tiny_cars",
                           data_dir=tiny_tfds_dir).records("holdout")


def test_cars196_without_data_says_what_to_do(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(FileNotFoundError) as info:
    open_source("tfds:cars196", tfds_data_dir=tmp_path)
  assert "launch.prepare_data" in str(info.value)
  with pytest.raises(FileNotFoundError, match="cars_train.tgz"):
    open_source("tfds:cars196", tfds_data_dir=tmp_path,
                tfds_manual_dir=tmp_path)
