"""Robust image decoding to uint8 RGB, and resizing to a square model input.

`load_rgb` accepts whatever people's image folders really hold (JPEG, PNG, BMP,
WebP, GIF, TIFF; greyscale, palette, alpha, CMYK, 16-bit; EXIF-rotated phone
photos; 1x1 pixel images) and always returns an ``HxWx3`` uint8 array, or
raises `UnreadableImageError` with the file's name and a human-readable reason.
Callers (see `carjax.data.cache`) catch that one exception to skip and report
a bad file instead of crashing a long decode run.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

# PIL refuses images above 2 * Image.MAX_IMAGE_PIXELS (~179 Mpx) with a
# DecompressionBombError. We enforce the same limit ourselves, from the header
# alone, so the check does not depend on that global (which other code may
# change) and so the file is rejected before any pixel memory is allocated.
MAX_PIXELS = 2 * 89_478_485

ResizeMode = Literal["squash", "crop", "pad"]
RESIZE_MODES: tuple[str, ...] = ("squash", "crop", "pad")

# Colour modes that carry an alpha channel (PIL names; the lower-case 'a'
# variants are premultiplied alpha).
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# Background that transparent pixels are composited onto (see _flatten_alpha).
_ALPHA_BACKGROUND = (255, 255, 255)


class UnreadableImageError(ValueError):
  """An image file (or byte string) that cannot be decoded.

  Attributes:
    name: the file path (or other identifier) of the image.
    reason: a short human-readable explanation, e.g. "file is empty (0 bytes)".
  """

  def __init__(self, name: str, reason: str):
    super().__init__(f"{name}: {reason}")
    self.name = name
    self.reason = reason

  def __reduce__(self):
    # Keeps the two-argument constructor picklable (e.g. across processes).
    return (type(self), (self.name, self.reason))


def load_rgb(source: str | os.PathLike | bytes, *,
             name: str | None = None) -> np.ndarray:
  """Decodes an image file or encoded bytes to a uint8 ``[H, W, 3]`` RGB array.

  * Animated GIF/WebP/TIFF: the first frame.
  * EXIF orientation is applied, so the array is upright as viewers show it.
  * Greyscale and palette images are expanded to RGB.
  * Images with transparency are composited onto white (see `_flatten_alpha`).
  * CMYK (including Adobe's inverted-CMYK JPEGs, which PIL recognises) is
    converted with PIL's plain CMYK->RGB formula; ICC profiles are ignored.
  * 16-bit and 32-bit greyscale are scaled to 8 bits (not clipped).

  Args:
    source: a file path, or the encoded file contents as bytes.
    name: the identifier used in error messages; defaults to the path, or
      "<bytes>" for byte input.

  Returns:
    A C-contiguous uint8 array of shape ``[height, width, 3]``.

  Raises:
    UnreadableImageError: the file is missing, empty, truncated, not an image,
      too large (a decompression bomb), or in a colour mode with no RGB meaning.
  """
  if isinstance(source, (bytes, bytearray, memoryview)):
    name = name if name is not None else "<bytes>"
    data = bytes(source)
  else:
    name = name if name is not None else os.fspath(source)
    try:
      with open(source, "rb") as f:
        data = f.read()
    except OSError as e:
      raise UnreadableImageError(
          name, f"cannot read file: {e.strerror or e}") from e
  if not data:
    raise UnreadableImageError(name, "file is empty (0 bytes)")

  try:
    with warnings.catch_warnings():
      # A DecompressionBombWarning is harmless here: we apply our own limit.
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      image = Image.open(io.BytesIO(data))
      width, height = image.size
      if width * height > MAX_PIXELS:
        raise UnreadableImageError(
            name, f"image is {width}x{height} = {width * height:,} pixels, "
            f"above the {MAX_PIXELS:,}-pixel limit (possible decompression "
            "bomb)")
      if width < 1 or height < 1:
        raise UnreadableImageError(name, f"image has size {width}x{height}")
      # Image.open only parses the header; load() decodes the pixels, which
      # is where truncated or corrupt data shows up.
      image.load()
  except UnreadableImageError:
    raise
  except Image.UnidentifiedImageError as e:
    raise UnreadableImageError(
        name, f"not a recognised image format ({len(data):,} bytes; first "
        f"bytes {data[:8]!r})") from e
  except Image.DecompressionBombError as e:
    raise UnreadableImageError(
        name, f"image too large (possible decompression bomb): {e}") from e
  except (OSError, SyntaxError, ValueError, EOFError, IndexError,
          MemoryError, TypeError) as e:
    # PIL reports truncation and corrupt streams as OSError, and broken
    # headers of some formats as SyntaxError/ValueError/IndexError.
    raise UnreadableImageError(
        name, f"corrupt or truncated image data: {e}") from e

  image = _apply_exif_orientation(image)
  try:
    array = _to_rgb_array(image)
  except (OSError, ValueError) as e:
    raise UnreadableImageError(
        name, f"cannot convert colour mode {image.mode!r} to RGB: {e}") from e
  return array


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
  """Rotates/flips the image as its EXIF Orientation tag says.

  Phone photos are stored sensor-side-up with a tag telling viewers how to
  rotate them; a model must see them the way a person does.
  """
  try:
    return ImageOps.exif_transpose(image)
  except Exception:  # pylint: disable=broad-except
    # Malformed EXIF blocks are common and never make the pixels unreadable;
    # the unrotated image is still the best we can do.
    return image


def _to_rgb_array(image: Image.Image) -> np.ndarray:
  """Converts any PIL colour mode to a uint8 [H, W, 3] array."""
  mode = image.mode
  if mode == "P" and "transparency" in image.info:
    image = image.convert("RGBA")
    mode = "RGBA"
  if mode in _ALPHA_MODES:
    image = _flatten_alpha(image)
  elif mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
    image = _high_bit_depth_grey_to_l(image)
  elif mode == "F":
    image = _float_grey_to_l(image)
  if image.mode != "RGB":
    image = image.convert("RGB")
  return np.array(image, dtype=np.uint8, copy=True)


def _flatten_alpha(image: Image.Image) -> Image.Image:
  """Composites an image with transparency onto a white background.

  The colour of fully transparent pixels is undefined (often black, sometimes
  leftover editing garbage), so simply dropping alpha would show the model
  artefacts nobody sees. Transparent images in the wild are mostly cut-out
  product/car shots meant to be shown on a white page, so white is what a
  person sees and what the model should see.
  """
  rgba = image.convert("RGBA")
  background = Image.new("RGBA", rgba.size, _ALPHA_BACKGROUND + (255,))
  background.alpha_composite(rgba)
  return background.convert("RGB")


def _high_bit_depth_grey_to_l(image: Image.Image) -> Image.Image:
  """Scales 16-bit (or 32-bit integer) greyscale to 8-bit greyscale.

  PIL's own convert() clips values above 255, which turns almost every 16-bit
  photo white; the full range must be rescaled instead.
  """
  values = np.asarray(image).astype(np.float64)
  # Mode 'I' is how PIL opens 16-bit PNGs, so its range is taken as 16-bit
  # unless the values clearly exceed it.
  max_value = 65535.0 if values.max(initial=0) <= 65535 else values.max()
  values = np.clip(values, 0, max_value) * (255.0 / max_value)
  return Image.fromarray(np.round(values).astype(np.uint8), mode="L")


def _float_grey_to_l(image: Image.Image) -> Image.Image:
  """Maps float greyscale (TIFF 'F' mode) to 8 bits: [0, 1] or [0, 255]."""
  values = np.nan_to_num(np.asarray(image, dtype=np.float64))
  scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
  values = np.clip(values * scale, 0, 255)
  return Image.fromarray(np.round(values).astype(np.uint8), mode="L")


def image_hw(size) -> tuple[int, int]:
  """(height, width) of a model input size given as S (a square), (S,) or (height, width).

  Configs hold `data.image_size` as a pair; a bare number (older configs and workdirs) or a
  one-element tuple (what `--config.data.image_size=256` parses to) is a square.
  """
  if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
    dims = (int(size), int(size))
  elif isinstance(size, (tuple, list)) and len(size) in (1, 2) and all(
      isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size):
    dims = (int(size[0]), int(size[-1]))
  else:
    raise ValueError(f"an image size is S or (height, width) in whole pixels, got {size!r}")
  if min(dims) < 1:
    raise ValueError(f"an image size must be positive, got {size!r}")
  return dims


def resize_to(image: np.ndarray, size, mode: ResizeMode = "squash", *,
              pad_value: int = 0) -> np.ndarray:
  """Resizes an RGB image to ``height x width`` with bicubic filtering.

  Modes:
    * 'squash': the whole image is resized to height x width, ignoring its aspect
      ratio. Nothing is cut off, which measured best for the wide bounding-box
      car crops this project uses (a centre crop cuts off the car's ends). With a
      canvas near the photos' own aspect (e.g. 192x352 for ~1.9:1 crops) the car is
      hardly distorted.
    * 'crop': the image is scaled to cover the canvas and the centre kept.
    * 'pad': the image is scaled to fit inside the canvas and letterboxed,
      centred, on a `pad_value` background.

  PIL's bicubic resize widens its kernel when shrinking, i.e. it antialiases.

  Args:
    image: uint8 array ``[H, W, 3]``.
    size: the output size: S (a square) or (height, width) (see `image_hw`).
    mode: 'squash', 'crop' or 'pad'.
    pad_value: grey level (0-255) of the letterbox bars in 'pad' mode.

  Returns:
    A uint8 array of shape ``[height, width, 3]``.
  """
  if mode not in RESIZE_MODES:
    raise ValueError(
        f"Unknown resize mode {mode!r}; expected one of {RESIZE_MODES}.")
  out_h, out_w = image_hw(size)
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
    raise ValueError("resize_to expects a uint8 [H, W, 3] array, got "
                     f"{image.dtype} {image.shape}.")
  height, width = image.shape[:2]
  pil_image = Image.fromarray(image)

  if mode == "squash":
    if (height, width) == (out_h, out_w):
      return image.copy()
    resized = pil_image.resize((out_w, out_h), Image.Resampling.BICUBIC)
  elif mode == "crop":
    # Resizing just the centre box of the canvas's aspect (the `box` argument) is the same
    # as "scale to cover, then centre-crop", with one resampling step and no rounding of an
    # intermediate size. For a square canvas the box is the centre square.
    scale = min(width / out_w, height / out_h)
    box_w, box_h = out_w * scale, out_h * scale
    left, top = (width - box_w) / 2, (height - box_h) / 2
    resized = pil_image.resize((out_w, out_h), Image.Resampling.BICUBIC,
                               box=(left, top, left + box_w, top + box_h))
  else:  # pad
    scale = min(out_w / width, out_h / height)
    new_width = min(out_w, max(1, round(width * scale)))
    new_height = min(out_h, max(1, round(height * scale)))
    content = pil_image.resize((new_width, new_height),
                               Image.Resampling.BICUBIC)
    resized = Image.new("RGB", (out_w, out_h), (pad_value,) * 3)
    resized.paste(content, ((out_w - new_width) // 2, (out_h - new_height) // 2))
  return np.asarray(resized, dtype=np.uint8)
