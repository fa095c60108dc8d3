"""Training-time augmentation, run on the accelerator inside the jitted step.

The host only gathers cached uint8 images; cropping, flipping and colour jitter happen here,
vectorised over the batch, so a 2-core CPU never has to keep up with per-image PIL work and a
GPU/TPU does it for free. Every function is pure: the same key gives the same augmentation,
which is what makes a resumed run identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from carjax.data import decode


def _crop_box(rng, height, width, scale, log_ratio):
  """Samples one (top, left, crop_h, crop_w) like Inception's random-resized crop."""
  area_rng, ratio_rng, top_rng, left_rng = jax.random.split(rng, 4)
  area = jax.random.uniform(area_rng, (), minval=scale[0], maxval=scale[1]) * height * width
  aspect = jnp.exp(jax.random.uniform(ratio_rng, (), minval=log_ratio[0], maxval=log_ratio[1]))
  crop_w = jnp.clip(jnp.sqrt(area * aspect), 1.0, width)
  crop_h = jnp.clip(jnp.sqrt(area / aspect), 1.0, height)
  top = jax.random.uniform(top_rng, ()) * (height - crop_h)
  left = jax.random.uniform(left_rng, ()) * (width - crop_w)
  return top, left, crop_h, crop_w


def random_resized_crop(rng, image, out_size, scale=(0.35, 1.0), ratio=(0.75, 1.333)):
  """Crops a random box of `scale` of the area and `ratio` aspect, resized to `out_size`
  (S for a square, or (height, width)).

  `ratio` is the box's width/height relative to the image's own (a 1.0 box has the image's
  shape): on a non-square canvas such as 192×352 the crops keep the canvas's proportions
  instead of being stretched from squares; on a square image it is the plain aspect.
  The box is resampled with `jax.image.scale_and_translate` (antialiased bilinear), whose
  scale and offset may be traced values, so one compiled program serves every box.
  """
  height, width = image.shape[0], image.shape[1]
  out_h, out_w = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
  log_ratio = (jnp.log(ratio[0]), jnp.log(ratio[1]))
  if height != width:
    image_aspect = jnp.log(width / height)
    log_ratio = (log_ratio[0] + image_aspect, log_ratio[1] + image_aspect)
  top, left, crop_h, crop_w = _crop_box(rng, height, width, scale, log_ratio)
  scale_yx = jnp.stack([out_h / crop_h, out_w / crop_w])
  translate_yx = jnp.stack([-top, -left]) * scale_yx
  return jax.image.scale_and_translate(
      image, (out_h, out_w, image.shape[2]), spatial_dims=(0, 1),
      scale=scale_yx, translation=translate_yx, method="linear", antialias=True)


def _grey(image):
  return jnp.tensordot(image, jnp.array([0.299, 0.587, 0.114], image.dtype), axes=1)[..., None]


def color_jitter(rng, image, strength: float):
  """Random brightness, contrast and saturation factors in [1 - s, 1 + s], random order-free."""
  b_rng, c_rng, s_rng = jax.random.split(rng, 3)
  factor = lambda k: jax.random.uniform(k, (), minval=1.0 - strength, maxval=1.0 + strength)
  image = image * factor(b_rng)
  mean = jnp.mean(_grey(image))
  image = mean + (image - mean) * factor(c_rng)
  grey = _grey(image)
  image = grey + (image - grey) * factor(s_rng)
  return jnp.clip(image, 0.0, 255.0)


def augment_image(rng, image, *, out_size, scale, ratio, flip: bool, jitter: float):
  """One uint8/float HxWx3 image → augmented float32 [out_h, out_w, 3] on the 0..255 scale."""
  crop_rng, flip_rng, jitter_rng = jax.random.split(rng, 3)
  image = image.astype(jnp.float32)
  image = random_resized_crop(crop_rng, image, out_size, scale, ratio)
  if flip:
    image = jnp.where(jax.random.bernoulli(flip_rng), image[:, ::-1, :], image)
  if jitter > 0:
    image = color_jitter(jitter_rng, image, jitter)
  return image


def augment_batch(rng, images, *, out_size, scale=(0.35, 1.0), ratio=(0.75, 1.333),
                  flip=True, jitter=0.2):
  """Augments every image of a batch with its own key."""
  keys = jax.random.split(rng, images.shape[0])
  fn = lambda k, im: augment_image(k, im, out_size=out_size, scale=scale, ratio=ratio,
                                   flip=flip, jitter=jitter)
  return jax.vmap(fn)(keys, images)


def cutmix(rng, images, *, alpha: float, prob: float):
  """CutMix (Yun et al., ICCV 2019) over a batch of [B, H, W, C] images.

  With probability `prob` (once per batch), one box, of a fraction 1 - λ of the canvas with
  λ ~ Beta(alpha, alpha) and a uniform centre (clipped at the borders), is pasted into every
  image from a partner image (a random permutation of the batch). Returns (images, partner
  [B] int32, kept [B] float32): `kept` is the fraction of each image's pixels that are its own
  (1 where nothing was pasted), the weight its own label gets in the loss; the partner's
  label gets the rest. The box is drawn with traced bounds, so one program serves all.
  """
  batch, height, width = images.shape[0], images.shape[1], images.shape[2]
  apply_rng, lam_rng, perm_rng, y_rng, x_rng = jax.random.split(rng, 5)
  partner = jax.random.permutation(perm_rng, batch).astype(jnp.int32)
  side = jnp.sqrt(1.0 - jax.random.beta(lam_rng, alpha, alpha))
  cut_h = jnp.round(side * height).astype(jnp.int32)
  cut_w = jnp.round(side * width).astype(jnp.int32)
  centre_y = jax.random.randint(y_rng, (), 0, height)
  centre_x = jax.random.randint(x_rng, (), 0, width)
  top = jnp.clip(centre_y - cut_h // 2, 0, height)
  bottom = jnp.clip(centre_y + (cut_h + 1) // 2, 0, height)
  left = jnp.clip(centre_x - cut_w // 2, 0, width)
  right = jnp.clip(centre_x + (cut_w + 1) // 2, 0, width)
  rows, cols = jnp.arange(height), jnp.arange(width)
  in_rows = (rows >= top) & (rows < bottom)
  in_cols = (cols >= left) & (cols < right)
  inside = in_rows[:, None] & in_cols[None, :] & jax.random.bernoulli(apply_rng, prob)
  mixed = jnp.where(inside[None, :, :, None], images[partner], images)
  kept = 1.0 - jnp.mean(inside.astype(jnp.float32))
  return mixed, partner, jnp.full((batch,), kept, jnp.float32)


def mixup(rng, images, *, alpha: float, prob: float):
  """mixup (Zhang et al., ICLR 2018) over a batch of [B, H, W, C] images.

  With probability `prob` (once per batch), every image becomes λ × itself + (1 − λ) × its
  partner (a random permutation of the batch), one λ ~ Beta(alpha, alpha) for the whole
  batch. Returns (images, partner [B] int32, kept [B] float32) as `cutmix` does: `kept` is λ
  (1 where nothing was mixed), the weight its own label gets in the loss; the partner's label
  gets the rest.
  """
  batch = images.shape[0]
  apply_rng, lam_rng, perm_rng = jax.random.split(rng, 3)
  partner = jax.random.permutation(perm_rng, batch).astype(jnp.int32)
  lam = jnp.where(jax.random.bernoulli(apply_rng, prob),
                  jax.random.beta(lam_rng, alpha, alpha), 1.0)
  weight = lam.astype(images.dtype)
  mixed = weight * images + (1 - weight) * images[partner]
  return mixed, partner, jnp.full((batch,), lam, jnp.float32)


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
  """The augmentation of a run: output size, crop scale and ratio ranges, flip, jitter."""

  out_size: int | tuple[int, int]  # S (a square) or (height, width).
  scale: tuple[float, float] = (0.35, 1.0)
  ratio: tuple[float, float] = (0.75, 1.333)
  flip: bool = True
  jitter: float = 0.2
  cutmix_prob: float = 0.0  # 0: no CutMix.
  cutmix_alpha: float = 1.0
  mixup_prob: float = 0.0  # 0: no mixup; at most one of CutMix and mixup (config checks).
  mixup_alpha: float = 0.2

  @classmethod
  def from_config(cls, data_cfg: ml_collections.ConfigDict) -> "AugmentSpec":
    """The augmentation `config.data` describes (`image_size`, `augment.*`)."""
    aug = data_cfg.augment
    return cls(out_size=decode.image_hw(data_cfg.image_size), scale=tuple(aug.crop_scale),
               ratio=tuple(aug.crop_ratio), flip=aug.flip, jitter=aug.color_jitter,
               cutmix_prob=aug.cutmix_prob, cutmix_alpha=aug.cutmix_alpha,
               mixup_prob=aug.mixup_prob, mixup_alpha=aug.mixup_alpha)

  def apply(self, rng, images):
    """`augment_batch` of `images` with this spec."""
    return augment_batch(rng, images, out_size=self.out_size, scale=self.scale,
                         ratio=self.ratio, flip=self.flip, jitter=self.jitter)
