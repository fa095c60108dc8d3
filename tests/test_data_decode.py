"""Tests for carjax.data.decode: every odd and broken image file we expect."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
import pytest

from carjax.data import decode
from carjax.data.decode import UnreadableImageError, load_rgb, resize_to

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def _encode(image: Image.Image, format: str, **save_options) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=format, **save_options)
  return buffer.getvalue()


def _solid(color, size=(8, 6), mode="RGB") -> Image.Image:
  return Image.new(mode, size, color)


@pytest.mark.parametrize("format,extension", [
    ("JPEG", "jpg"), ("PNG", "png"), ("BMP", "bmp"), ("WEBP", "webp"),
    ("GIF", "gif"), ("TIFF", "tif"),
])
def test_common_formats_decode_to_uint8_rgb(tmp_path, format, extension):
  path = tmp_path / f"image.{extension}"
  options = {"quality": 95} if format in ("JPEG", "WEBP") else {}
  _solid((200, 40, 30), size=(10, 7)).save(path, format=format, **options)
  array = load_rgb(path)
  assert array.dtype == np.uint8 and array.shape == (7, 10, 3)
  assert array.flags["C_CONTIGUOUS"]
  np.testing.assert_allclose(array.mean(axis=(0, 1)), (200, 40, 30), atol=6)


def test_bytes_input_matches_file_input(tmp_path):
  data = _encode(_solid((10, 20, 30)), "PNG")
  path = tmp_path / "a.png"
  path.write_bytes(data)
  np.testing.assert_array_equal(load_rgb(data), load_rgb(str(path)))


def test_animated_gif_gives_first_frame():
  frames = [_solid(c).convert("P", palette=Image.Palette.ADAPTIVE)
            for c in (RED, BLUE)]
  data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:],
                 duration=100, loop=0)
  assert Image.open(io.BytesIO(data)).n_frames == 2
  np.testing.assert_array_equal(load_rgb(data)[0, 0], RED)


def test_greyscale_and_bilevel_expand_to_three_equal_channels():
  for mode, value, expected in (("L", 77, 77), ("1", 1, 255)):
    array = load_rgb(_encode(_solid(value, mode=mode), "PNG"))
    assert array.shape == (6, 8, 3)
    assert (array == expected).all(), mode


def test_palette_image():
  image = _solid((0, 128, 255)).convert("P", palette=Image.Palette.ADAPTIVE)
  assert image.mode == "P"
  np.testing.assert_array_equal(load_rgb(_encode(image, "PNG"))[0, 0],
                                (0, 128, 255))


def test_rgba_is_composited_on_white():
  image = Image.new("RGBA", (4, 2), (0, 0, 0, 0))  # Transparent black.
  image.putpixel((0, 0), (255, 0, 0, 255))  # Opaque red.
  image.putpixel((1, 0), (0, 0, 255, 128))  # Half-transparent blue.
  array = load_rgb(_encode(image, "PNG"))
  np.testing.assert_array_equal(array[0, 0], RED)
  np.testing.assert_allclose(array[0, 1], (127, 127, 255), atol=1)
  np.testing.assert_array_equal(array[1, 3], (255, 255, 255))


def test_greyscale_alpha_is_composited_on_white():
  image = Image.new("LA", (2, 1), (0, 0))
  image.putpixel((0, 0), (50, 255))
  array = load_rgb(_encode(image, "PNG"))
  np.testing.assert_array_equal(array[0], [(50, 50, 50), (255, 255, 255)])


def test_palette_with_transparency_is_composited_on_white():
  image = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
  image.putpixel((0, 0), (0, 200, 0, 255))
  data = _encode(image.convert("P"), "GIF", transparency=0)
  decoded = Image.open(io.BytesIO(data))
  assert decoded.mode == "P" and "transparency" in decoded.info
  array = load_rgb(data)
  assert {tuple(array[0, 0]), tuple(array[0, 1])} == {(0, 200, 0),
                                                      (255, 255, 255)}


def test_cmyk_jpeg_decodes_to_matching_rgb():
  # PIL writes CMYK JPEGs the Adobe way (inverted, with an APP14 marker) and
  # must read them back as the right colour, not its negative.
  data = _encode(_solid((0, 255, 255, 0), mode="CMYK"), "JPEG", quality=95)
  assert Image.open(io.BytesIO(data)).mode == "CMYK"
  np.testing.assert_allclose(load_rgb(data).mean(axis=(0, 1)), RED, atol=8)


def test_cmyk_tiff():
  data = _encode(_solid((255, 0, 0, 0), mode="CMYK"), "TIFF")
  np.testing.assert_array_equal(load_rgb(data)[0, 0], (0, 255, 255))


def test_16_bit_greyscale_is_scaled_not_clipped():
  values = np.array([[0, 32768, 65535]], np.uint16)
  for format in ("PNG", "TIFF"):
    data = _encode(Image.fromarray(values), format)
    array = load_rgb(data)
    assert array.shape == (1, 3, 3)
    np.testing.assert_array_equal(array[0, :, 0], (0, 128, 255), err_msg=format)


def test_float_tiff():
  values = np.array([[0.0, 0.5, 1.0]], np.float32)
  array = load_rgb(_encode(Image.fromarray(values, mode="F"), "TIFF"))
  np.testing.assert_array_equal(array[0, :, 1], (0, 128, 255))


def test_exif_orientation_is_applied():
  # A 4x2 image stored sideways: left half red, right half blue. Orientation
  # 6 tells viewers to rotate it 90 degrees clockwise, which brings the left
  # (red) half to the top of a 2-wide, 4-high picture.
  image = Image.new("RGB", (4, 2), BLUE)
  image.paste(RED, (0, 0, 2, 2))
  exif = Image.Exif()
  exif[0x0112] = 6
  data = _encode(image, "PNG", exif=exif)
  raw = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
  assert raw.shape == (2, 4, 3)
  array = load_rgb(data)
  assert array.shape == (4, 2, 3)
  np.testing.assert_array_equal(array[:2].reshape(-1, 3), [RED] * 4)
  np.testing.assert_array_equal(array[2:].reshape(-1, 3), [BLUE] * 4)


def test_one_pixel_image():
  array = load_rgb(_encode(_solid((1, 2, 3), size=(1, 1)), "PNG"))
  np.testing.assert_array_equal(array, [[(1, 2, 3)]])
  assert resize_to(array, 5, "crop").shape == (5, 5, 3)
  assert resize_to(array, 5, "pad").shape == (5, 5, 3)


@pytest.mark.parametrize("content,reason_part", [
    (b"", "empty"),
    (b"this is a text file, not a photo\n", "not a recognised image"),
])
def test_non_images_raise_with_path_and_reason(tmp_path, content, reason_part):
  path = tmp_path / "car.jpg"
  path.write_bytes(content)
  with pytest.raises(UnreadableImageError) as info:
    load_rgb(path)
  assert info.value.name == str(path)
  assert reason_part in info.value.reason
  assert str(path) in str(info.value)


def test_truncated_jpeg_raises(tmp_path):
  rng = np.random.default_rng(0)
  noise = Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8))
  data = _encode(noise, "JPEG", quality=90)
  path = tmp_path / "cut.jpg"
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(UnreadableImageError, match="truncated"):
    load_rgb(path)


def test_truncated_png_raises():
  data = _encode(Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7), "PNG")
  with pytest.raises(UnreadableImageError):
    load_rgb(data[:60], name="cut.png")


def test_missing_file_raises(tmp_path):
  with pytest.raises(UnreadableImageError, match="cannot read file"):
    load_rgb(tmp_path / "nope.jpg")


def test_decompression_bomb_is_rejected(monkeypatch):
  monkeypatch.setattr(decode, "MAX_PIXELS", 100)
  with pytest.raises(UnreadableImageError, match="decompression bomb"):
    load_rgb(_encode(_solid(0, size=(20, 20)), "PNG"), name="bomb.png")


def test_error_name_defaults_for_bytes():
  with pytest.raises(UnreadableImageError) as info:
    load_rgb(b"junk")
  assert info.value.name == "<bytes>"


def _three_band_image() -> np.ndarray:
  """60x20: red | green | blue vertical bands, 20 px each."""
  array = np.zeros((20, 60, 3), np.uint8)
  array[:, :20, 0] = array[:, 20:40, 1] = array[:, 40:, 2] = 255
  return array


def test_resize_squash_keeps_the_whole_image():
  out = resize_to(_three_band_image(), 30, "squash")
  assert out.shape == (30, 30, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[15, 2], (255, 0, 0))
  np.testing.assert_array_equal(out[15, 15], (0, 255, 0))
  np.testing.assert_array_equal(out[15, 27], (0, 0, 255))


def test_resize_crop_keeps_the_centre():
  out = resize_to(_three_band_image(), 10, "crop")
  assert out.shape == (10, 10, 3)
  # Only the green centre band survives; the bicubic kernel may blend a
  # little of the neighbouring bands into the edge columns, as resizing the
  # whole image before cropping would.
  np.testing.assert_array_equal(out[5, 3:7], [(0, 255, 0)] * 4)
  np.testing.assert_allclose(out[5, [0, 9]], [(0, 255, 0)] * 2, atol=20)


def test_resize_pad_letterboxes():
  out = resize_to(_three_band_image(), 30, "pad", pad_value=9)
  assert out.shape == (30, 30, 3)
  # 60x20 -> 30x10, centred vertically: rows 10..19 are image, the rest bars.
  assert (out[:10] == 9).all() and (out[20:] == 9).all()
  np.testing.assert_array_equal(out[15, 2], (255, 0, 0))


def test_resize_rejects_bad_arguments():
  image = _three_band_image()
  with pytest.raises(ValueError, match="resize mode"):
    resize_to(image, 8, "stretch")
  with pytest.raises(ValueError, match="uint8"):
    resize_to(image.astype(np.float32), 8)


def test_image_hw_reads_every_size_form():
  assert decode.image_hw(224) == (224, 224)
  assert decode.image_hw((256,)) == (256, 256)  # What --config.data.image_size=256 parses to.
  assert decode.image_hw((192, 352)) == (192, 352)
  assert decode.image_hw([96, 192]) == (96, 192)
  for bad in ((1, 2, 3), "224", (0, 10), (1.5, 2), True):
    with pytest.raises(ValueError, match="image size"):
      decode.image_hw(bad)


def test_non_square_resize_modes():
  image = _three_band_image()  # 20×60.
  squash = resize_to(image, (10, 40), "squash")
  assert squash.shape == (10, 40, 3)
  np.testing.assert_array_equal(squash[5, [2, 20, 37]], [(255, 0, 0), (0, 255, 0), (0, 0, 255)])
  # crop: cover 10×15 (aspect 1.5) → the centre 20×30 box: 5 px of red and of blue remain.
  crop = resize_to(image, (10, 15), "crop")
  assert crop.shape == (10, 15, 3)
  np.testing.assert_array_equal(crop[5, 7], (0, 255, 0))
  assert crop[5, 0, 0] > 200 and crop[5, 14, 2] > 200
  # pad: fit 20×60 into 30×40 → 13×40 content, bars above and below.
  pad = resize_to(image, (30, 40), "pad", pad_value=9)
  assert pad.shape == (30, 40, 3)
  assert (pad[:8] == 9).all() and (pad[22:] == 9).all()
  np.testing.assert_array_equal(pad[15, 2], (255, 0, 0))
