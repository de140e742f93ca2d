"""bench.images: the one image loader (docs/protocols.md section 6, "Image files")."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bench import BenchError
from bench.images import as_saved_jpeg, check_image, jpeg_roundtrip, load_rgb


def _gradient(w: int = 24, h: int = 16) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.stack([xx * 10 % 256, yy * 15 % 256, (xx + yy) * 5 % 256], axis=-1).astype(np.uint8)


def test_exif_orientation_is_applied(tmp_path):
    upright = _gradient()
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)    # as a sideways camera stores it
    exif = Image.Exif()
    exif[0x0112] = 6                                                            # "rotate 90 CW to display"
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif, quality=100, subsampling=0)
    loaded = np.asarray(load_rgb(path)).astype(int)
    assert loaded.shape == upright.shape
    assert np.abs(loaded - upright).mean() < 3                                  # JPEG noise only


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[:4, :, 3] = 255               # top half opaque green, bottom half fully transparent
    rgba[4:6, :, 3] = 128              # two rows half transparent
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba, "RGBA").save(path)
    out = np.asarray(load_rgb(path)).astype(int)
    assert (out[:4] == (10, 200, 30)).all()
    assert (out[6:] == 255).all()                                               # transparent -> white, not black
    assert np.abs(out[4:6] - np.array([10, 200, 30]) * 0.5 - 255 * 0.5).max() <= 1.5
    la = Image.fromarray(np.stack([np.full((4, 4), 50, np.uint8), np.zeros((4, 4), np.uint8)], -1), "LA")
    la.save(tmp_path / "la.png")
    assert (np.asarray(load_rgb(tmp_path / "la.png")) == 255).all()


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    path = tmp_path / "depth16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(load_rgb(path)).astype(int)
    assert out.shape == (8, 8, 3) and (out[..., 0] == out[..., 1]).all()
    assert np.abs(out[..., 0] - np.round(values / 65535 * 255)).max() <= 1
    assert (out < 250).mean() > 0.9      # convert("RGB") would have clipped nearly everything to white


def test_palette_with_transparency(tmp_path):
    palette = Image.new("P", (6, 6), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    palette.paste(1, (0, 0, 3, 6))                      # left half index 1 (blue), right half index 0 (red)
    path = tmp_path / "palette.png"
    palette.save(path, transparency=0)                  # index 0 transparent
    out = np.asarray(load_rgb(path))
    assert (out[:, :3] == (0, 0, 255)).all() and (out[:, 3:] == 255).all()
    gif = tmp_path / "palette.gif"
    palette.save(gif, transparency=0)
    assert (np.asarray(load_rgb(gif))[:, 3:] == 255).all()


def test_cmyk_and_greyscale(tmp_path):
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))   # pure red in CMYK
    cmyk.save(tmp_path / "cmyk.jpg", quality=100)
    red = np.asarray(load_rgb(tmp_path / "cmyk.jpg")).astype(int)
    assert red.shape == (4, 4, 3) and red[..., 0].min() > 230 and red[..., 1:].max() < 25
    Image.fromarray(np.full((4, 4), 77, np.uint8), "L").save(tmp_path / "grey.png")
    assert (np.asarray(load_rgb(tmp_path / "grey.png")) == 77).all()
    grey_key = Image.fromarray(np.array([[0, 77], [77, 0]], np.uint8), "L")
    grey_key.save(tmp_path / "grey_key.png", transparency=0)
    assert (np.asarray(load_rgb(tmp_path / "grey_key.png"))[0, 0] == 255).all()


def test_truncated_and_non_image_files_fail_in_one_line_naming_the_file(tmp_path):
    path = tmp_path / "cut.png"
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    for bad in (path, tmp_path / "missing.png", tmp_path):
        with pytest.raises(BenchError) as err:
            load_rgb(bad)
        assert bad.name in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(BenchError):
        check_image(path)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(BenchError, match="text.png"):
        load_rgb(tmp_path / "text.png")


def test_jpeg_read_back_is_what_pil_default_save_gives(tmp_path):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    png, jpg = tmp_path / "a.png", tmp_path / "a.jpg"
    image.save(png)
    image.save(jpg)                                      # PIL's defaults: quality 75
    expected = np.asarray(Image.open(jpg).convert("RGB"))
    assert np.array_equal(np.asarray(jpeg_roundtrip(image)), expected)
    assert np.array_equal(np.asarray(as_saved_jpeg(png)), expected)
    assert np.array_equal(np.asarray(as_saved_jpeg(jpg)), expected)          # a JPEG is read, not re-encoded
    assert not np.array_equal(np.asarray(as_saved_jpeg(png)), np.asarray(image))
