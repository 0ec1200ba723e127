"""Several trays on one image: the failures a reflection model is shown, the references a prompt shows.

One grid of thumbnails, each numbered (or captioned), so a person — or a model that takes one image
per request — can see them together and refer to them by number.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from PIL import Image, ImageDraw

from promptgrade.providers.base import ImageInput

SHEET_CELL = 256  # px per tray on the contact sheet
SHEET_COLUMNS = 4


def contact_sheet(
    images: Sequence[ImageInput], cell: int = SHEET_CELL, captions: Sequence[str] | None = None
) -> ImageInput:
    """The images on one grid, labelled 1, 2, … or with ``captions`` (one per image)."""
    columns = min(SHEET_COLUMNS, len(images))
    rows = math.ceil(len(images) / columns)
    sheet = Image.new("RGB", (columns * cell, rows * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for index, image in enumerate(images):
        with Image.open(io.BytesIO(image.data)) as opened:
            tile = opened.convert("RGB")
            tile.thumbnail((cell, cell))
        x, y = (index % columns) * cell, (index // columns) * cell
        sheet.paste(tile, (x, y))
        label = captions[index] if captions is not None else str(index + 1)
        width = int(draw.textlength(label)) + 8
        draw.rectangle((x, y, x + width, y + 16), fill="black")
        draw.text((x + 4, y + 2), label, fill="white")
    out = io.BytesIO()
    sheet.save(out, "JPEG", quality=85)
    return ImageInput(out.getvalue(), "image/jpeg", size=sheet.size)


def sheet_size(n: int, cell: int = SHEET_CELL) -> tuple[int, int]:
    columns = min(SHEET_COLUMNS, n)
    return columns * cell, math.ceil(n / columns) * cell
