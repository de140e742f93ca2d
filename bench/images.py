"""The one image loader of the harness: suites, methods and metrics all read files through it.

What it does, in order (docs/protocols.md, "Image files"):

0. the size in the file's header checked against bench.limits (side, pixels, aspect ratio)
   before a single pixel is decoded, in one line naming the file and the limit;
1. a full decode (``Image.load()``), so a truncated or corrupt file fails here, in one line
   naming the file, and not later inside a model;
2. EXIF orientation applied (a phone photo stored sideways comes out upright);
3. an explicit conversion to 8-bit RGB:
   - alpha (RGBA, LA, PA; P, L and RGB with a transparency key) is composited on white;
   - 16- and 32-bit integer greyscale (``I;16*``, ``I``) is scaled down by its bit depth
     (``convert("RGB")`` would clip it and turn most of the image white);
   - 32-bit float greyscale (``F``) is taken as 0..1 when its maximum is at most 1, else 0..255;
   - palette, CMYK, greyscale, YCbCr and the rest go through PIL's own conversion.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from bench import BenchError
from bench.limits import MAX_IMAGE_ASPECT, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE

_WHITE = (255, 255, 255)


def to_rgb(image: Image.Image) -> Image.Image:
    """An already decoded PIL image as 8-bit RGB (alpha on white; high bit depths scaled)."""
    mode = image.mode
    if mode in ("P", "L", "RGB") and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(image).astype(np.float64)
        peak = 65535.0 if (mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        if mode == "I" and arr.max(initial=0) > 65535:
            peak = float(2 ** 32 - 1)
        grey = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(image).astype(np.float64)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        grey = np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return image.convert("RGB")


def check_dimensions(size: tuple[int, int], path: Path | str) -> None:
    """Refuse an image size outside bench.limits (read from the header, before decoding)."""
    width, height = size
    long, short = max(width, height), min(width, height)
    if long > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise BenchError(f"image {path} is {width}x{height} pixels, over the limit of {MAX_IMAGE_SIDE} px a side "
                         f"and {MAX_IMAGE_PIXELS // 10**6} Mpx (bench.limits); resize it")
    if short < 1 or long / short > MAX_IMAGE_ASPECT:
        raise BenchError(f"image {path} is {width}x{height} pixels: aspect ratio {long / max(short, 1):.0f}:1 is over the "
                         f"limit of {MAX_IMAGE_ASPECT:g}:1 (bench.limits.MAX_IMAGE_ASPECT); crop it to the subject")


@contextlib.contextmanager
def _one_line(path: Path):
    """PIL's and the file system's exceptions while reading ``path`` as one-line BenchErrors."""
    try:
        yield
    except FileNotFoundError:
        raise BenchError(f"missing image file {path}") from None
    except IsADirectoryError:
        raise BenchError(f"{path} is a folder, expected an image file") from None
    except BenchError:
        raise
    except Image.DecompressionBombError:
        raise BenchError(f"image {path} has more pixels than the limit of {MAX_IMAGE_PIXELS // 10**6} Mpx "
                         "(bench.limits.MAX_IMAGE_PIXELS); resize it") from None
    except Exception as exc:  # PIL raises many kinds (UnidentifiedImageError, OSError, SyntaxError, ...)
        raise BenchError(f"corrupt or unreadable image {path}: {exc}") from None


def open_image(path: Path | str) -> Image.Image:
    """Check the header's size (bench.limits), decode the file fully and apply its EXIF
    orientation; keep its mode. One-line error if bad."""
    path = Path(path)
    from bench.output_guard import require_regular

    require_regular(path, "image")                # a FIFO would block Image.open, a device never ends
    with _one_line(path):
        with Image.open(path) as opened:
            check_dimensions(opened.size, path)
            opened.load()
            image = ImageOps.exif_transpose(opened)
            if image is opened:
                image = opened.copy()
    return image


def check_header(path: Path | str, data: bytes | None = None) -> None:
    """Refuse a file whose header is not an image's or whose size is outside bench.limits (the
    decompression-bomb bounds included), in the one-line errors of :func:`open_image`, without
    decoding a pixel. ``data``: the file's bytes when the caller has read them already (the header
    is then parsed from memory). A truncated pixel stream passes here: the full decode, where the
    image is read for use, refuses it."""
    path = Path(path)
    if data is None:
        from bench.output_guard import require_regular

        require_regular(path, "image")
    with _one_line(path):
        try:
            opened = Image.open(io.BytesIO(data) if data is not None else path)
        except Image.UnidentifiedImageError:          # named as open_image names it, not as a buffer
            raise BenchError(f"corrupt or unreadable image {path}: cannot identify image file {str(path)!r}") from None
        with opened:
            check_dimensions(opened.size, path)


def load_rgb(path: Path | str) -> Image.Image:
    """An image file as 8-bit RGB, decoded in full, upright, alpha on white."""
    return to_rgb(open_image(path))


#: files that passed check_image in this process, by (path, size, mtime_ns): each file is decoded
#: once per command even when the suite loader and the runner both check it
_CHECKED: set[tuple[str, int, int]] = set()


def check_image(path: Path | str) -> None:
    """Refuse anything that is not a regular, fully decodable image file (one-line BenchError)."""
    path = Path(path)
    if not path.is_file():  # also refuses /dev/zero, FIFOs and folders before any read
        raise BenchError(f"{path} is not a regular image file")
    st = path.stat()
    stamp = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if stamp in _CHECKED:
        return
    open_image(path).close()
    _CHECKED.add(stamp)


#: Pillow's default JPEG quality: what ``image.save("x.jpg")`` writes without options, as
#: FastComposer's generation script saves its outputs (docs/protocols.md section 4).
PIL_DEFAULT_JPEG_QUALITY = 75


def jpeg_roundtrip(image: Image.Image) -> Image.Image:
    """The RGB image as it reads back after ``image.save(path_with_jpg_suffix)`` with Pillow's
    defaults (quality 75, 4:2:0 chroma subsampling), saved and decoded in memory."""
    buffer = io.BytesIO()
    to_rgb(image).save(buffer, format="JPEG")
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def as_saved_jpeg(path: Path | str) -> Image.Image:
    """An image file as a JPEG-saving pipeline would read it back: a JPEG file as it is decoded,
    any other file through :func:`jpeg_roundtrip` (one JPEG generation, never two)."""
    image = to_rgb(open_image(path))
    with Image.open(path) as header:            # open_image's copy no longer knows its format
        is_jpeg = header.format == "JPEG"
    return image if is_jpeg else jpeg_roundtrip(image)
