"""Checks the hand-written formulas of `docs/mathematics.md` (`tests/reference/mathematics.py`).

Every reference forward is compared with the Flax/Optax layer's forward, and every
hand-written backward with `jax.vjp`/`jax.grad` of that layer, on random inputs of several
shapes (stride 1/2/3, SAME/VALID/explicit padding, odd sizes, kernels 3 and 5, several
channels). Most checks run in float64 with tight tolerances; a few repeat in float32.
Then the whole chain: a hand-composed backward through a tiny `CustomCNN` against
`jax.grad`, and `jax.test_util.check_grads` on `CustomCNN` itself.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from tests.reference import mathematics as M
from carjax.models.cnn import CustomCNN

F64 = dict(rtol=1e-10, atol=1e-10)
F32 = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture
def x64():
  """Runs the test with 64-bit floats enabled, restored afterwards."""
  with jax.enable_x64(True):
    yield


def _rand(rng: np.random.Generator, shape, dtype=np.float64):
  return jnp.asarray(rng.standard_normal(shape), dtype)


def _vjp(f, *primals):
  """`jax.vjp` of the jitted `f` (compiles two small programs instead of many eager ops)."""
  return jax.vjp(jax.jit(f), *primals)


def _close(actual, expected, tol):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), **tol)


# ----------------------------------------------------------------------------------------
# convolution
# ----------------------------------------------------------------------------------------

# (N, H, W, C_in, C_out, k, stride, padding)
CONV_CASES = [
    (2, 7, 7, 3, 4, 3, 1, "SAME"),
    (2, 8, 9, 3, 5, 3, 2, "SAME"),
    (1, 11, 8, 2, 3, 5, 2, "SAME"),
    (2, 10, 10, 4, 2, 5, 1, "VALID"),
    (1, 9, 7, 2, 3, 5, 2, "VALID"),        # (H - k) % s != 0: last rows never read
    (1, 10, 9, 2, 3, 3, 3, "VALID"),
    (2, 6, 7, 3, 2, 3, 2, ((1, 2), (0, 1))),  # asymmetric explicit padding
]


def _flax_conv(cout, k, stride, padding):
  return nn.Conv(cout, (k, k), strides=stride, padding=padding, use_bias=True)


def _conv_case(case, dtype, seed=0):
  n, h, w, cin, cout, k, stride, padding = case
  rng = np.random.default_rng(seed)
  x = _rand(rng, (n, h, w, cin), dtype)
  params = {"kernel": _rand(rng, (k, k, cin, cout), dtype), "bias": _rand(rng, (cout,), dtype)}
  conv = _flax_conv(cout, k, stride, padding)
  f = lambda p, x: conv.apply({"params": p}, x)
  y, vjp = _vjp(f, params, x)
  dy = _rand(rng, y.shape, dtype)
  dparams, dx = vjp(dy)
  return x, params, y, dy, dparams, dx


def _conv_reference(x, params, dy, stride, padding):
  fwd = M.conv2d_forward(x, params["kernel"], params["bias"], strides=stride, padding=padding)
  dk = M.conv2d_backward_kernel(x, dy, params["kernel"].shape, strides=stride, padding=padding)
  db = M.conv2d_backward_bias(dy)
  dx = M.conv2d_backward_input(dy, params["kernel"], x.shape, strides=stride, padding=padding)
  return fwd, dk, db, dx


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_forward_and_backward_float64(x64, case):
  stride, padding = case[6], case[7]
  x, params, y, dy, dparams, dx = _conv_case(case, np.float64)
  fwd, dk, db, dx_ref = jax.jit(functools.partial(_conv_reference, stride=stride,
                                                  padding=padding))(x, params, dy)
  assert fwd.shape == y.shape
  _close(fwd, y, F64)
  _close(dk, dparams["kernel"], F64)
  _close(db, dparams["bias"], F64)
  _close(dx_ref, dx, F64)


@pytest.mark.parametrize("case", [CONV_CASES[1], CONV_CASES[4]], ids=str)
def test_conv2d_forward_and_backward_float32(case):
  stride, padding = case[6], case[7]
  x, params, y, dy, dparams, dx = _conv_case(case, np.float32, seed=1)
  fwd, dk, db, dx_ref = jax.jit(functools.partial(_conv_reference, stride=stride,
                                                  padding=padding))(x, params, dy)
  _close(fwd, y, F32)
  _close(dk, dparams["kernel"], F32)
  _close(db, dparams["bias"], F32)
  _close(dx_ref, dx, F32)


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[2]], ids=str)
def test_conv2d_backward_input_needs_the_flip(x64, case):
  """Negative control: without the spatial flip the input gradient is clearly wrong."""
  stride, padding = case[6], case[7]
  x, params, _, dy, _, dx = _conv_case(case, np.float64, seed=2)
  wrong = M.conv2d_backward_input(dy, params["kernel"], x.shape, strides=stride,
                                  padding=padding, flip=False)
  right = M.conv2d_backward_input(dy, params["kernel"], x.shape, strides=stride,
                                  padding=padding)
  _close(right, dx, F64)
  rel_err = float(jnp.linalg.norm(wrong - dx) / jnp.linalg.norm(dx))
  assert rel_err > 0.3, rel_err


def test_same_padding_matches_lax():
  for size in range(1, 12):
    for k in (1, 2, 3, 5):
      for s in (1, 2, 3):
        expected = jax.lax.padtype_to_pads((size,), (k,), (s,), "SAME")[0]
        assert M.same_padding(size, k, s) == tuple(expected), (size, k, s)


# ----------------------------------------------------------------------------------------
# pooling
# ----------------------------------------------------------------------------------------

# (N, H, W, C, window, stride)
POOL_CASES = [
    (2, 8, 8, 3, 2, 2),   # what CustomCNN uses
    (2, 7, 9, 3, 2, 2),   # odd sizes: last row/column dropped (VALID)
    (1, 9, 9, 2, 3, 2),   # overlapping windows: gradients accumulate
    (1, 8, 7, 2, 3, 1),
]


def _pool_vjp(pool, x, window, stride, dy_seed):
  f = lambda x: pool(x, (window, window), strides=(stride, stride))
  y, vjp = _vjp(f, x)
  dy = _rand(np.random.default_rng(dy_seed), y.shape, x.dtype)
  return y, dy, vjp(dy)[0]


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_maxpool_forward_and_backward(x64, case):
  n, h, w, c, window, stride = case
  x = _rand(np.random.default_rng(3), (n, h, w, c))
  y, dy, dx = _pool_vjp(nn.max_pool, x, window, stride, 4)
  _close(M.maxpool_forward(x, window, stride), y, F64)
  _close(M.maxpool_backward(x, dy, window, stride), dx, F64)
  # Each window routes its whole gradient to one element: with disjoint windows, dX has
  # exactly one non-zero per window.
  if window == stride:
    assert int((np.asarray(dx) != 0).sum()) == dy.size


@pytest.mark.parametrize("window,stride", [(2, 2), (3, 2)])
def test_maxpool_ties_go_to_the_first_maximum(x64, window, stride):
  """With ties (integer inputs) XLA's select-and-scatter picks the first maximum in
  row-major window order; the reference implements the same subgradient."""
  x = jnp.asarray(np.random.default_rng(5).integers(0, 2, (2, 9, 9, 3)), jnp.float64)
  y, dy, dx = _pool_vjp(nn.max_pool, x, window, stride, 6)
  _close(M.maxpool_backward(x, dy, window, stride), dx, F64)
  all_zero = jnp.zeros((1, 2, 2, 1))
  g = jax.grad(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)).sum())(all_zero)
  _close(g.ravel(), [1.0, 0.0, 0.0, 0.0], F64)


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_avgpool_forward_and_backward(x64, case):
  n, h, w, c, window, stride = case
  x = _rand(np.random.default_rng(7), (n, h, w, c))
  y, dy, dx = _pool_vjp(nn.avg_pool, x, window, stride, 8)
  _close(M.avgpool_forward(x, window, stride), y, F64)
  _close(M.avgpool_backward(x.shape, dy, window, stride), dx, F64)


def test_global_avgpool_and_flatten(x64):
  rng = np.random.default_rng(9)
  x = _rand(rng, (2, 3, 5, 4))
  y, vjp = _vjp(lambda x: jnp.mean(x, axis=(1, 2)), x)
  dy = _rand(rng, y.shape)
  _close(M.global_avgpool_forward(x), y, F64)
  _close(M.global_avgpool_backward(x.shape, dy), vjp(dy)[0], F64)
  y, vjp = _vjp(lambda x: x.reshape((x.shape[0], -1)), x)
  dy = _rand(rng, y.shape)
  _close(M.flatten_forward(x), y, F64)
  # Row-major index (h W + w) C + c of Eq. (16).
  assert float(M.flatten_forward(x)[1, (2 * 5 + 3) * 4 + 1]) == float(x[1, 2, 3, 1])
  _close(M.flatten_backward(x.shape, dy), vjp(dy)[0], F64)


# ----------------------------------------------------------------------------------------
# dense, ReLU
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,tol", [(np.float64, F64), (np.float32, F32)])
def test_dense_forward_and_backward(dtype, tol):
  with jax.enable_x64(dtype == np.float64):
    rng = np.random.default_rng(10)
    x = _rand(rng, (5, 7), dtype)
    params = {"kernel": _rand(rng, (7, 3), dtype), "bias": _rand(rng, (3,), dtype)}
    f = lambda p, x: nn.Dense(3).apply({"params": p}, x)
    y, vjp = _vjp(f, params, x)
    dy = _rand(rng, y.shape, dtype)
    dparams, dx = vjp(dy)
    _close(M.dense_forward(x, params["kernel"], params["bias"]), y, tol)
    dx_ref, dw_ref, db_ref = M.dense_backward(x, params["kernel"], dy)
    _close(dx_ref, dx, tol)
    _close(dw_ref, dparams["kernel"], tol)
    _close(db_ref, dparams["bias"], tol)


def test_relu_forward_and_backward(x64):
  rng = np.random.default_rng(11)
  x = _rand(rng, (4, 5, 3)).at[0, 0].set(0.0)   # exact zeros: the subgradient there is 0
  y, vjp = _vjp(nn.relu, x)
  dy = _rand(rng, y.shape)
  _close(M.relu_forward(x), y, F64)
  _close(M.relu_backward(x, dy), vjp(dy)[0], F64)
  assert float(jax.grad(nn.relu)(0.0)) == 0.0
  assert not np.any(np.asarray(M.relu_backward(x, dy))[0, 0])


# ----------------------------------------------------------------------------------------
# BatchNorm
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 5, 6, 3), (8, 4)])
def test_batchnorm_train_forward_and_backward(x64, shape):
  rng = np.random.default_rng(12)
  c = shape[-1]
  x = 2.0 * _rand(rng, shape) + 0.5
  params = {"scale": _rand(rng, (c,)), "bias": _rand(rng, (c,))}
  stats = {"mean": _rand(rng, (c,)), "var": jnp.exp(_rand(rng, (c,)))}
  bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)

  def f(p, x):
    return bn.apply({"params": p, "batch_stats": stats}, x, mutable=["batch_stats"])

  (y, new_vars), vjp = _vjp(f, params, x)
  dy = _rand(rng, y.shape)
  dparams, dx = vjp((dy, jax.tree.map(jnp.zeros_like, new_vars)))

  y_ref, cache = M.batchnorm_train_forward(x, params["scale"], params["bias"], eps=1e-5)
  _close(y_ref, y, F64)
  dx_ref, dscale, dbias = M.batchnorm_train_backward(dy, params["scale"], cache)
  _close(dx_ref, dx, F64)
  _close(dscale, dparams["scale"], F64)
  _close(dbias, dparams["bias"], F64)
  # Eq. (24) projects out the constants exactly, and x_hat up to the factor eps / (var + eps).
  axes = tuple(range(len(shape) - 1))
  x_hat, inv_std, _, var = cache
  _close(dx_ref.sum(axis=axes), np.zeros(c), F64)
  _close((dx_ref * x_hat).sum(axis=axes),
         params["scale"] * inv_std * dscale * 1e-5 / (var + 1e-5), F64)
  mean, var = M.batchnorm_running_update(stats["mean"], stats["var"], cache[2], cache[3])
  _close(mean, new_vars["batch_stats"]["mean"], F64)
  _close(var, new_vars["batch_stats"]["var"], F64)


def test_batchnorm_eval_is_affine(x64):
  rng = np.random.default_rng(13)
  x = _rand(rng, (2, 4, 4, 3))
  params = {"scale": _rand(rng, (3,)), "bias": _rand(rng, (3,))}
  stats = {"mean": _rand(rng, (3,)), "var": jnp.exp(_rand(rng, (3,)))}
  bn = nn.BatchNorm(use_running_average=True, epsilon=1e-5)
  y, vjp = _vjp(lambda x: bn.apply({"params": params, "batch_stats": stats}, x), x)
  dy = _rand(rng, y.shape)
  _close(M.batchnorm_eval_forward(x, params["scale"], params["bias"], stats["mean"],
                                  stats["var"]), y, F64)
  _close(M.batchnorm_eval_backward(dy, params["scale"], stats["var"]), vjp(dy)[0], F64)


# ----------------------------------------------------------------------------------------
# dropout
# ----------------------------------------------------------------------------------------

def test_dropout_forward_and_backward(x64):
  rate = 0.3
  rng = np.random.default_rng(14)
  x = _rand(rng, (6, 10))
  drop = nn.Dropout(rate, deterministic=False)
  key = jax.random.PRNGKey(0)
  f = jax.jit(lambda x: drop.apply({}, x, rngs={"dropout": key}))
  mask = f(jnp.ones_like(x)) != 0            # the mask this key draws
  assert 0 < int(mask.sum()) < mask.size
  y, vjp = _vjp(f, x)
  dy = _rand(rng, y.shape)
  _close(M.dropout_forward(x, mask, rate), y, F64)
  _close(M.dropout_backward(dy, mask, rate), vjp(dy)[0], F64)


# ----------------------------------------------------------------------------------------
# softmax cross-entropy
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.0, 0.1])
@pytest.mark.parametrize("dtype,tol", [(np.float64, F64), (np.float32, F32)])
def test_softmax_cross_entropy(alpha, dtype, tol):
  with jax.enable_x64(dtype == np.float64):
    rng = np.random.default_rng(15)
    k = 7
    logits = 3.0 * _rand(rng, (5, k), dtype)
    one_hot = jax.nn.one_hot(rng.integers(0, k, 5), k, dtype=dtype)
    targets = optax.smooth_labels(one_hot, alpha)
    _close(M.smooth_labels(one_hot, alpha), targets, tol)
    loss = jax.jit(lambda z: optax.softmax_cross_entropy(z, targets))
    _close(M.softmax_cross_entropy(logits, targets), loss(logits), tol)
    # Per-example gradient softmax(z) - y (the sum over the batch decouples the rows).
    grad_fn = jax.jit(jax.grad(lambda z: loss(z).sum()))
    grad = grad_fn(logits)
    _close(M.softmax_cross_entropy_grad(logits, targets), grad, tol)
    _close(M.softmax_cross_entropy_grad(logits, targets).sum(axis=-1), np.zeros(5), tol)
    # Log-sum-exp stabilisation: logits around 1e4 neither overflow nor change the loss.
    big = logits + 1e4 if dtype == np.float64 else logits + 500.0
    assert np.all(np.isfinite(np.asarray(M.softmax_cross_entropy(big, targets))))
    _close(M.softmax_cross_entropy(big, targets), M.softmax_cross_entropy(logits, targets),
           dict(rtol=1e-9, atol=1e-9) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-3))
    _close(M.softmax_cross_entropy_grad(big, targets), grad_fn(big), tol)


# ----------------------------------------------------------------------------------------
# cosine loss and cosine head
# ----------------------------------------------------------------------------------------

def test_cosine_loss_forward_and_backward(x64):
  from carjax.train import steps  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(16)
  logits = 3.0 * _rand(rng, (6, 5))
  labels = rng.integers(0, 5, 6)
  loss = jax.jit(lambda z: steps.cosine_loss(z, jnp.asarray(labels)))
  _close(M.cosine_loss(logits, labels), loss(logits), F64)
  grad = jax.grad(lambda z: loss(z).sum())(logits)
  _close(M.cosine_loss_grad(logits, labels), grad, dict(rtol=1e-9, atol=1e-9))
  # Scale-invariant: the gradient is orthogonal to z, so it never grows or shrinks the logits.
  _close((np.asarray(grad) * logits).sum(axis=-1), np.zeros(6), dict(rtol=0, atol=1e-12))


def test_mixed_targets_loss_is_the_cross_entropy_of_the_mixed_distribution(x64):
  """Eqs. (37)-(38): κ L(y_a) + (1 − κ) L(y_b) = L(κ y_a + (1 − κ) y_b), gradient p − ỹ."""
  from carjax.train import steps  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(18)
  logits = 4.0 * _rand(rng, (6, 5))
  own, partner = rng.integers(0, 5, 6), rng.integers(0, 5, 6)
  kept = np.full(6, 0.3)
  targets = {"label": jnp.asarray(own), "partner_label": jnp.asarray(partner),
             "kept": jnp.asarray(kept)}
  loss = steps.make_per_example_loss(5, 0.1, 0, 0.0)
  per_example = lambda z: loss((z, None), targets)
  smooth = lambda t: 0.9 * np.eye(5)[t] + 0.1 / 5
  mixed_target = kept[:, None] * smooth(own) + (1 - kept[:, None]) * smooth(partner)
  log_p = np.asarray(jax.nn.log_softmax(logits))
  # The train step's losses are float32 whatever the logits' dtype: float32 tolerances.
  _close(-(mixed_target * log_p).sum(-1), per_example(logits), dict(rtol=1e-5, atol=1e-6))
  grad = jax.grad(lambda z: per_example(z).sum())(logits)
  _close(np.exp(log_p) - mixed_target, grad, dict(rtol=1e-5, atol=1e-6))


def test_cosine_head_forward_and_backward(x64):
  rng = np.random.default_rng(17)
  z, dl = _rand(rng, (4, 5)), _rand(rng, (4, 5))
  log_scale = 1.3
  head = lambda z, sigma: jnp.exp(sigma) * z / jnp.sqrt(jnp.sum(z * z, -1, keepdims=True) + 1e-12)
  y, vjp = _vjp(head, z, jnp.asarray(log_scale))
  _close(M.cosine_head_forward(z, log_scale), y, dict(rtol=1e-9, atol=1e-9))
  dz, dsigma = vjp(dl)
  ref_dz, ref_dsigma = M.cosine_head_backward(z, log_scale, dl)
  _close(ref_dz, dz, dict(rtol=1e-9, atol=1e-9))
  _close(ref_dsigma, dsigma, dict(rtol=1e-9, atol=1e-9))


# ----------------------------------------------------------------------------------------
# the whole network
# ----------------------------------------------------------------------------------------

def _tiny_cnn(global_pool, pooling="max", stem_stride=1, convs_per_stage=2):
  return CustomCNN(num_classes=5, stage_widths=(4, 4), convs_per_stage=convs_per_stage,
                   kernel_size=3,
                   stem_stride=stem_stride, pooling=pooling, use_batchnorm=True,
                   global_pool=global_pool, dense_widths=(6,), dropout_rate=0.0,
                   dtype=jnp.float64, param_dtype=jnp.float64)


def _random_variables(model, x, seed):
  """Random parameters of the shapes `model.init` would make (traced only, never compiled):
  kernels ~ N(0, 1/fan_in), BatchNorm scale ~ 1 + N(0, 0.1^2), biases ~ N(0, 0.1^2)."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0), x)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return _rand(rng, leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
    if name in ("scale", "var"):
      return 1.0 + 0.1 * _rand(rng, leaf.shape)
    return 0.1 * _rand(rng, leaf.shape)

  variables = jax.tree_util.tree_map_with_path(draw, shapes)
  return variables["params"], variables["batch_stats"]


def _manual_loss_and_grads(model: CustomCNN, params, x, targets):
  """Section 9: the chain rule composed by hand from the layer backward formulas."""
  tape = []
  h = x
  for s, _ in enumerate(model.stage_widths):
    stage = params[f"stage{s + 1}"]
    for i in range(model.convs_per_stage):
      stride = model.stem_stride if (s == 0 and i == 0) else 1
      kernel = stage[f"conv{i}"]["kernel"]
      z = M.conv2d_forward(h, kernel, strides=stride, padding="SAME")
      bn = stage[f"bn{i}"]
      u, cache = M.batchnorm_train_forward(z, bn["scale"], bn["bias"], eps=1e-5)
      tape.append(("conv", s, i, h, stride))
      tape.append(("bn", s, i, cache))
      tape.append(("relu", u))
      h = M.relu_forward(u)
    pool = M.maxpool_forward if model.pooling == "max" else M.avgpool_forward
    tape.append(("pool", h))
    h = pool(h, 2, 2)
  tape.append(("global", h.shape))
  h = M.global_avgpool_forward(h) if model.global_pool == "avg" else M.flatten_forward(h)
  for d, _ in enumerate(model.dense_widths):
    p = params[f"dense{d}"]
    tape.append(("dense", f"dense{d}", h))
    u = M.dense_forward(h, p["kernel"], p["bias"])
    tape.append(("relu", u))
    h = M.relu_forward(u)
  tape.append(("dense", "head", h))
  logits = M.dense_forward(h, params["head"]["kernel"], params["head"]["bias"])
  n = x.shape[0]
  loss = M.softmax_cross_entropy(logits, targets).mean()

  grads = jax.tree.map(jnp.zeros_like, params)
  g = M.softmax_cross_entropy_grad(logits, targets) / n      # mean over the batch
  for entry in reversed(tape):
    kind = entry[0]
    if kind == "dense":
      name, inp = entry[1], entry[2]
      g, dw, db = M.dense_backward(inp, params[name]["kernel"], g)
      grads[name] = {"kernel": dw, "bias": db}
    elif kind == "relu":
      g = M.relu_backward(entry[1], g)
    elif kind == "global":
      shape = entry[1]
      g = (M.global_avgpool_backward(shape, g) if model.global_pool == "avg"
           else M.flatten_backward(shape, g))
    elif kind == "pool":
      inp = entry[1]
      g = (M.maxpool_backward(inp, g, 2, 2) if model.pooling == "max"
           else M.avgpool_backward(inp.shape, g, 2, 2))
    elif kind == "bn":
      s, i, cache = entry[1:]
      bn = params[f"stage{s + 1}"][f"bn{i}"]
      g, dscale, dbias = M.batchnorm_train_backward(g, bn["scale"], cache)
      grads[f"stage{s + 1}"][f"bn{i}"] = {"scale": dscale, "bias": dbias}
    elif kind == "conv":
      s, i, inp, stride = entry[1:]
      kernel = params[f"stage{s + 1}"][f"conv{i}"]["kernel"]
      grads[f"stage{s + 1}"][f"conv{i}"] = {"kernel": M.conv2d_backward_kernel(
          inp, g, kernel.shape, strides=stride, padding="SAME")}
      g = M.conv2d_backward_input(g, kernel, inp.shape, strides=stride, padding="SAME")
  return loss, logits, grads, g


def test_hand_composed_backward_matches_jax_grad(x64):
  """Section 9: the layer formulas chained by hand reproduce jax.grad of the whole loss."""
  model = _tiny_cnn("flatten", pooling="max", stem_stride=2)
  rng = np.random.default_rng(16)
  x = _rand(rng, (2, 16, 16, 3))
  targets = optax.smooth_labels(jax.nn.one_hot(jnp.array([1, 3]), 5, dtype=jnp.float64), 0.1)
  params, batch_stats = _random_variables(model, x, seed=18)

  def loss_fn(params, x):
    logits, _ = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                            mutable=["batch_stats"])
    return optax.softmax_cross_entropy(logits, targets).mean(), logits

  (loss, logits), (grads, dx) = jax.jit(
      jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))(params, x)
  assert logits.dtype == jnp.float64
  ref = jax.jit(functools.partial(_manual_loss_and_grads, model))
  loss_ref, logits_ref, grads_ref, dx_ref = ref(params, x, targets)
  _close(logits_ref, logits, F64)
  _close(loss_ref, loss, F64)
  assert jax.tree.structure(grads_ref) == jax.tree.structure(grads)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g_ref = functools.reduce(lambda t, k: t[k.key], path, grads_ref)
    np.testing.assert_allclose(np.asarray(g_ref), np.asarray(g), rtol=1e-8, atol=1e-11,
                               err_msg=jax.tree_util.keystr(path))
  _close(dx_ref, dx, dict(rtol=1e-8, atol=1e-11))


@pytest.mark.parametrize("global_pool,pooling", [("avg", "max"), ("flatten", "avg")])
def test_custom_cnn_check_grads(x64, global_pool, pooling):
  """Reverse mode only: a forward-mode check ('fwd') passes too but costs ~2.5 s more."""
  model = _tiny_cnn(global_pool, pooling, convs_per_stage=1)  # conv→conv: see above
  x = _rand(np.random.default_rng(17), (2, 16, 16, 3))
  params, batch_stats = _random_variables(model, x, seed=19)

  def f(params, x):
    logits, _ = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                            mutable=["batch_stats"])
    return logits

  assert f(params, x).dtype == jnp.float64
  # A small eps, so that a finite-difference step (along check_grads' N(0, 1) direction)
  # almost never crosses a ReLU kink or reorders a max-pooling window; float64 central
  # differences are then accurate to ~1e-8 relative. (check_grads scales atol/rtol by the
  # number of outputs, 10 here.)
  check_grads(jax.jit(f), (params, x), order=1, modes=("rev",), eps=1e-7,
              atol=1e-6, rtol=1e-6)
