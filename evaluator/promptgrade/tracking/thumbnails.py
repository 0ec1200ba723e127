"""The tray as a trace shows it: a small JPEG, so a person reading traces sees the image, not a path.

Prepared images are already upright RGB JPEGs (``images.prepare_image``) but may be 1024 px and
150 KB; a trace view needs a glance, and every trace stores its own copy. So an image that is
already small is attached as it is (no re-encoding, no CPU), and a larger one is shrunk to at most
``MAX_SIDE`` px and re-encoded until it fits ``MAX_BYTES``. This runs in the tracking writer's
process, never on the sweep's event loop.
"""

from __future__ import annotations

from io import BytesIO

from PIL import Image

MAX_SIDE = 384
MAX_BYTES = 40_000
QUALITIES = (80, 65, 50, 35)


def thumbnail(data: bytes, mime_type: str) -> tuple[bytes, str] | None:
    """``(jpeg bytes, "image/jpeg")`` within the bounds, or ``None`` if the bytes are not an image."""
    try:
        with Image.open(BytesIO(data)) as image:
            if mime_type == "image/jpeg" and len(data) <= MAX_BYTES and max(image.size) <= MAX_SIDE:
                return data, mime_type
            image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced scale, cheaply
            small = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    small.thumbnail((MAX_SIDE, MAX_SIDE))
    for quality in QUALITIES:
        out = BytesIO()
        small.save(out, format="JPEG", quality=quality, optimize=True)
        if out.tell() <= MAX_BYTES:
            break
    return out.getvalue(), "image/jpeg"
