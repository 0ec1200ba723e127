"""Turn whatever image bytes arrive into the one form the model sees: an upright, RGB, bounded JPEG.

Experiments and the Lambda both call ``prepare_image`` so that a model is measured on exactly the
pixels it will get in production; a phone photo's EXIF rotation, a PNG's transparency or a 12-megapixel
original must not make the lab and production disagree. This module is part of the grading path and
so depends only on Pillow and the standard library.
"""

from __future__ import annotations

import hashlib
import warnings
from io import BytesIO
from pathlib import Path
from typing import cast

from PIL import Image, ImageOps, UnidentifiedImageError

from promptgrade.errors import DatasetError
from promptgrade.providers.base import ImageInput

DEFAULT_MAX_SIDE = 1024
# Far above any tray photo (a 48-MP phone sensor is 8000x6000); far below what exhausts a Lambda.
MAX_PIXELS = 64_000_000
JPEG_QUALITY = 90

# Formats Pillow may open here. Pinning them keeps a crafted file from reaching a rarely used decoder,
# and keeps ``sniff_mime`` (what the Lambda accepts) and ``prepare_image`` (what it can read) in step.
# (JPEG covers MPO too: Pillow's JPEG opener returns an MPO image for multi-picture files.)
_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_ISO_BMFF_BRANDS = {
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"hevc": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
    b"avif": "AVIF",
    b"avis": "AVIF",
}


class ImageError(DatasetError):
    """An image cannot be used; ``path`` is the source (file, example id, request) it came from.

    ``code`` names the kind of problem with a stable word (``empty_file``, ``not_an_image``,
    ``unsupported_format``, ``decompression_bomb``, ``truncated_image``, ``unreadable_image``) so that
    ``promptgrade validate-data`` can say what to do about it without parsing the message.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        code: str = "unreadable_image",
    ) -> None:
        self.code = code
        super().__init__(message, path=path, line=line)


def sniff_mime(data: bytes) -> str | None:
    """The MIME type of the formats ``prepare_image`` accepts, from magic bytes alone.

    Cheap enough to answer an HTTP 415 before decoding anything; ``None`` means "not one we take".
    """
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data.startswith(b"BM") and len(data) >= 26:
        return "image/bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return None


def _describe_unreadable(data: bytes) -> tuple[str, str]:
    """A guess at what a non-image file is, because "cannot identify image" sends people searching.

    Returns ``(code, description)``: ``not_an_image`` for documents (HTML, JSON, PDF, text) that were
    saved where an image belongs, ``unsupported_format`` for images we do not take, and
    ``unreadable_image`` for a file that starts like a supported format but does not parse.
    """
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return (
            "not_an_image",
            "is an HTML page, not an image (an error or login page saved in place of the image?)",
        )
    if head.startswith((b"<?xml", b"<svg")) or b"<svg" in head:
        return "unsupported_format", "is XML/SVG, which is not supported; export it as PNG or JPEG"
    if head.startswith((b"{", b"[")):
        return "not_an_image", "is JSON text, not an image"
    if data[4:8] == b"ftyp" and data[8:12] in _ISO_BMFF_BRANDS:
        kind = _ISO_BMFF_BRANDS[data[8:12]]
        return "unsupported_format", f"is {kind}, which is not supported; convert it to JPEG or PNG"
    if data.startswith(b"%PDF"):
        return "not_an_image", "is a PDF, not an image"
    sample = data[:512]
    if sample and all(32 <= b < 127 or b in (9, 10, 13) for b in sample):
        return "not_an_image", "is text, not an image"
    unsupported = "is not an image in a supported format (JPEG, PNG, WebP, GIF, BMP, TIFF)"
    # Magic bytes of a format we take, yet Pillow cannot identify it: damaged, not foreign.
    return ("unreadable_image" if sniff_mime(data) else "unsupported_format"), unsupported


def _open(data: bytes, source: str, max_pixels: int) -> Image.Image:
    """Open, verify and fully decode, turning every Pillow failure into one ImageError."""
    if not data:
        raise ImageError("image file is empty (0 bytes)", path=source, code="empty_file")
    Image.init()  # registers the WebP/TIFF openers that `formats=` names (idempotent)
    formats = [name for name in _FORMATS if name in Image.OPEN]  # a slim Pillow build may lack some
    with warnings.catch_warnings():
        # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; treat it as the refusal it is.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(BytesIO(data), formats=formats) as probe:
                _check_size(probe, source, max_pixels)
                probe.verify()
            image = Image.open(BytesIO(data), formats=formats)
            _check_size(image, source, max_pixels)
            image.load()
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(
                f"image is too large to decode safely ({exc})", path=source, code="decompression_bomb"
            ) from None
        except UnidentifiedImageError:
            code, description = _describe_unreadable(data)
            raise ImageError(f"file {description}", path=source, code=code) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            # Pillow signals truncation and corrupt chunks with these (SyntaxError for bad PNG chunks).
            reason = str(exc) or type(exc).__name__
            if "truncated" in reason.lower() or isinstance(exc, EOFError):
                raise ImageError(
                    f"image is truncated or incomplete ({reason})", path=source, code="truncated_image"
                ) from None
            raise ImageError(f"image is corrupt and cannot be decoded ({reason})", path=source) from None
    return image


def _check_size(image: Image.Image, source: str, max_pixels: int) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"image has no pixels ({width}x{height})", path=source)
    if width * height > max_pixels:
        raise ImageError(
            f"image is too large: {width}x{height} = {width * height / 1e6:.1f} megapixels "
            f"(limit {max_pixels / 1e6:.0f}); a decompression bomb or an unreduced scan",
            path=source,
            code="decompression_bomb",
        )


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation so the model sees what the photographer saw."""
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, TypeError, KeyError, SyntaxError):
        # A malformed EXIF block says nothing trustworthy about orientation; the pixels are still fine.
        return image


def _to_srgb(image: Image.Image) -> Image.Image:
    """Convert an embedded colour profile to sRGB, since the profile itself is stripped on output.

    Without this a Display-P3 or Adobe-RGB photo would look washed out once its profile is gone.
    """
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "CMYK"):
        return image
    try:
        from PIL import ImageCms
    except ImportError:  # Pillow built without littlecms: keep the pixels as they are
        return image
    try:
        source = ImageCms.ImageCmsProfile(BytesIO(icc))
        converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image  # an unreadable profile: the untransformed pixels are the best guess
    return converted if converted is not None else image


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """Scale 16/32-bit and float grey to 0-255: a plain convert("L") clips instead of scaling."""
    if image.mode != "F":
        image = image.convert("I")
    # "I" and "F" have one band, whose extrema Pillow gives as one (low, high) pair of numbers; its
    # annotation also allows the per-band pairs of multi-band images, which cannot occur here.
    low, high = cast("tuple[float, float]", image.getextrema())
    if high <= 255 and low >= 0:
        return image.convert("L")
    top = 65535.0 if 255 < high <= 65535 and low >= 0 else float(high)
    bottom = 0.0 if top == 65535.0 else float(low)
    span = (top - bottom) or 1.0
    scaled = image.point(lambda v: (v - bottom) * (255.0 / span))
    return scaled.convert("L")


def _flatten_on_white(image: Image.Image) -> Image.Image:
    """Composite transparency on white: transparent pixels often hold black, which would read as food."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        has_alpha = "transparency" in image.info or (
            image.palette is not None and image.palette.mode == "RGBA"
        )
        return _flatten_on_white(image) if has_alpha else image.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _flatten_on_white(image)
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _to_8bit_gray(image).convert("RGB")
    if mode in ("1", "L") and "transparency" in image.info:
        return _flatten_on_white(image)
    # L, 1, CMYK, YCbCr, LAB, HSV: Pillow's own conversions are right for these.
    return image.convert("RGB")


def _bounded(image: Image.Image, max_side: int) -> Image.Image:
    width, height = image.size
    longest = max(width, height)
    if longest <= max_side:
        return image
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def prepare_image(
    data: bytes,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    source: str = "image",
    max_pixels: int = MAX_PIXELS,
) -> ImageInput:
    """Normalise image bytes to an upright RGB JPEG whose longest side is at most ``max_side``.

    The output is deterministic for the same input and settings, so its sha256 can key caches and
    tell datasets apart. Metadata (EXIF, ICC, comments) is dropped: it would change the hash without
    changing what the model sees, and EXIF may carry a passenger's location.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    image = _open(data, source, max_pixels)
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)  # animated GIF/WebP, multi-page TIFF: the first frame is the photo
        image = _to_rgb(_to_srgb(_upright(image)))
        image = _bounded(image, max_side)
        out = BytesIO()
        image.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)
    except (OSError, ValueError) as exc:
        raise ImageError(f"image cannot be converted ({exc})", path=source) from None
    encoded = out.getvalue()
    return ImageInput(
        data=encoded, mime_type="image/jpeg", sha256=hashlib.sha256(encoded).hexdigest(), size=image.size
    )


__all__ = ["DEFAULT_MAX_SIDE", "MAX_PIXELS", "ImageError", "prepare_image", "sniff_mime"]
