"""Text that fits its figure: wrapped where it would be cut, measured as Agg will draw it.

Candidate labels are long ("meal_tray_json@v1 · gemini-2.5-flash · json · temperature=0.0 ·
max_output_tokens=512"), and a figure saved as it is (MLflow's ``log_figure``) cuts whatever runs
past its edge: bars lost their prompt and model names, two bars read the same, titles ended
mid-word. Layout engines would fix that at about twice the cost of every plot (see ``plots._figure``),
so the few texts that can be long are wrapped here, at the label's " · " separators first, against
their width as measured by the renderer that saves the PNG.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SEPARATOR = " · "  # between a candidate label's parts: prompt, model, mode, settings
Measure = Callable[[str, float], float]  # (one line of text, font size) → width in pixels


def measure(figure: Figure) -> Measure:
    """Text width in the figure's pixels, from the Agg renderer that will draw it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.font_manager import FontProperties

    renderer = FigureCanvasAgg(figure).get_renderer()  # type: ignore[no-untyped-call]

    def width(text: str, size: float) -> float:
        return float(renderer.get_text_width_height_descent(text, FontProperties(size=size), ismath=False)[0])

    return width


def wrap(text: str, max_px: float, size: float, width: Measure) -> list[str]:
    """``text`` as lines no wider than ``max_px``: broken at " · ", then at spaces, then anywhere."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        lines += _wrap_line(paragraph, max_px, lambda s: width(s, size), (SEPARATOR, " "))
    return lines


def _wrap_line(
    text: str, max_px: float, width: Callable[[str], float], separators: Sequence[str]
) -> list[str]:
    if width(text) <= max_px:
        return [text]
    if not separators:  # one unbroken word wider than the space: cut it where it must be cut
        lines, line = [], ""
        for char in text:
            if line and width(line + char) > max_px:
                lines.append(line)
                line = char
            else:
                line += char
        return [*lines, line]
    separator, finer = separators[0], separators[1:]
    first, *rest = text.split(separator)
    lines, line = [], first
    for part in rest:
        if width(line + separator + part) > max_px:
            lines.append(line)
            line = part
        else:
            line += separator + part
    lines.append(line)
    return [piece for line in lines for piece in _wrap_line(line, max_px, width, finer)]


def short_names(labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """Each label without the parts every label shares, and those shared parts (said once elsewhere).

    Three candidates of one model and one setting differ only by prompt: naming them by the prompt
    leaves room for a readable bar, and the figure states the shared model and settings once.
    """
    parts = [label.split(SEPARATOR) for label in labels]
    if len(parts) < 2:
        return list(labels), []
    shared = [part for part in parts[0] if all(part in other for other in parts[1:])]
    names = [SEPARATOR.join(p for p in label if p not in shared) or SEPARATOR.join(label) for label in parts]
    return names, shared


def set_title(figure: Figure, axes: Axes, title: str, detail: str, *, size: float = 9.0) -> None:
    """``title`` wrapped to what the axes' centred title can use, ``detail`` on the last line, and the
    top margin grown to the lines it takes."""
    width_px, height_px = figure.bbox.width, figure.bbox.height
    box = axes.get_position()
    centre = (box.x0 + box.x1) / 2 * width_px
    room = 2 * min(centre, width_px - centre) - 8  # a centred line grows both ways
    width = measure(figure)
    lines = wrap(title, room, size, width) + wrap(detail, room, size, width)
    line_px = size * 1.25 * figure.dpi / 72
    top = 1 - (len(lines) * line_px + 10) / height_px
    if top < box.y1:
        figure.subplots_adjust(top=top)
    axes.set_title("\n".join(lines), fontsize=size)


__all__ = ["SEPARATOR", "measure", "set_title", "short_names", "wrap"]
