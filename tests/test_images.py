"""Given image bytes as users and datasets really deliver them, the model always gets an upright RGB JPEG."""

from __future__ import annotations

import hashlib
import struct
import zlib
from io import BytesIO

import pytest
from PIL import Image

from promptgrade.errors import DatasetError
from promptgrade.images import ImageError, prepare_image, sniff_mime

RED, BLUE = (220, 20, 20), (20, 20, 220)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(BytesIO(data))
    image.load()
    return image


def close(pixel: tuple[int, ...], expected: tuple[int, int, int], tolerance: int = 30) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims huge dimensions: what a decompression bomb looks like from outside."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (300, 100), RED)
    image.paste(BLUE, (150, 0, 300, 100))  # left red, right blue
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    prepared = prepare_image(encode(image, "JPEG", exif=exif.tobytes()))

    out = decode(prepared.data)
    assert out.size == (100, 300)
    assert close(out.getpixel((50, 20)), RED)  # the left edge is now on top
    assert close(out.getpixel((50, 280)), BLUE)
    assert "exif" not in out.info  # metadata is stripped, so the rotation is not applied twice


def test_output_is_rgb_jpeg_with_sha_of_its_bytes() -> None:
    prepared = prepare_image(encode(Image.new("RGB", (64, 48), RED), "PNG"))
    assert prepared.mime_type == "image/jpeg"
    assert sniff_mime(prepared.data) == "image/jpeg"
    assert prepared.sha256 == hashlib.sha256(prepared.data).hexdigest()
    assert decode(prepared.data).mode == "RGB"


def test_cmyk_is_converted_to_rgb() -> None:
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 255, 0))  # full magenta + yellow = red
    out = decode(prepare_image(encode(cmyk, "JPEG")).data)
    assert out.mode == "RGB"
    assert close(out.getpixel((20, 20)), (255, 0, 0), tolerance=40)


def test_palette_transparency_becomes_white() -> None:
    image = Image.new("P", (40, 40), 0)
    image.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    image.paste(1, (20, 0, 40, 40))  # right half red, left half index 0 (black, transparent)
    out = decode(prepare_image(encode(image, "PNG", transparency=0)).data)
    assert close(out.getpixel((5, 20)), (255, 255, 255))
    assert close(out.getpixel((35, 20)), (200, 30, 30))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white_not_black(mode: str) -> None:
    image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))  # transparent black: would read as burnt food
    image.paste((30, 30, 30, 255), (20, 0, 40, 40))
    out = decode(prepare_image(encode(image.convert(mode), "PNG")).data)
    assert close(out.getpixel((5, 20)), (255, 255, 255))
    assert close(out.getpixel((35, 20)), (30, 30, 30))


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    image = Image.new("I;16", (40, 40), 32768)
    image.paste(Image.new("I;16", (20, 40), 65535), (0, 0))
    out = decode(prepare_image(encode(image, "PNG")).data)
    assert out.mode == "RGB"
    assert close(out.getpixel((10, 20)), (255, 255, 255), tolerance=4)
    assert close(out.getpixel((30, 20)), (128, 128, 128), tolerance=6)  # a plain convert("L") gives 255


def test_grey_image_becomes_rgb() -> None:
    out = decode(prepare_image(encode(Image.new("L", (30, 30), 90), "PNG")).data)
    assert out.mode == "RGB"
    assert close(out.getpixel((15, 15)), (90, 90, 90), tolerance=3)


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [((3000, 1500), 1024, (1024, 512)), ((600, 900), 256, (171, 256)), ((1024, 10), 1024, (1024, 10))],
)
def test_downscales_so_the_longest_side_fits(
    size: tuple[int, int], max_side: int, expected: tuple[int, int]
) -> None:
    prepared = prepare_image(encode(Image.new("RGB", size, RED), "PNG"), max_side=max_side)
    assert decode(prepared.data).size == expected


def test_never_upscales() -> None:
    prepared = prepare_image(encode(Image.new("RGB", (50, 40), RED), "PNG"), max_side=1024)
    assert decode(prepared.data).size == (50, 40)


def test_same_input_gives_the_same_bytes() -> None:
    data = encode(Image.effect_noise((300, 200), 40).convert("RGB"), "PNG")
    first, second = prepare_image(data), prepare_image(data)
    assert first.sha256 == second.sha256
    assert first.data == second.data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html><body>403 Forbidden</body></html>", "HTML"),
        (b"just some notes about lunch\n", "text"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00" + b"\x00" * 64, "HEIC"),
        (bytes(range(256)) * 4, "not an image"),
    ],
)
def test_unusable_files_raise_image_error_naming_the_source(data: bytes, expected: str) -> None:
    with pytest.raises(ImageError, match=expected) as caught:
        prepare_image(data, source="trays/0042.jpg")
    assert str(caught.value).startswith("trays/0042.jpg: ")
    assert isinstance(caught.value, DatasetError)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_raises_image_error(fmt: str) -> None:
    data = encode(Image.effect_noise((200, 200), 60).convert("RGB"), fmt)
    with pytest.raises(ImageError, match="truncated") as caught:
        prepare_image(data[: len(data) // 2], source="half.jpg")
    assert "half.jpg" in str(caught.value)


@pytest.mark.parametrize("size", [(9000, 8000), (20000, 20000)])
def test_decompression_bomb_is_refused_before_decoding(size: tuple[int, int]) -> None:
    # 72 MP is above our limit but below Pillow's warning; 400 MP is past Pillow's own refusal.
    with pytest.raises(ImageError, match="too large") as caught:
        prepare_image(png_header_only(*size), source="bomb.png")
    assert "bomb.png" in str(caught.value)


def test_pixel_limit_is_configurable() -> None:
    data = encode(Image.new("RGB", (200, 200), RED), "PNG")
    with pytest.raises(ImageError, match="too large"):
        prepare_image(data, max_pixels=10_000)


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
def test_sniff_mime_recognises_what_prepare_image_accepts(fmt: str, mime: str) -> None:
    data = encode(Image.new("RGB", (20, 20), BLUE), fmt)
    assert sniff_mime(data) == mime
    assert decode(prepare_image(data).data).size == (20, 20)


@pytest.mark.parametrize("data", [b"", b"<html></html>", b"%PDF-1.7", b"\x00\x00\x00\x18ftypheic"])
def test_sniff_mime_rejects_the_rest(data: bytes) -> None:
    assert sniff_mime(data) is None
