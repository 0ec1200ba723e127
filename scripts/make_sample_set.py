"""Generate the synthetic meal-tray sample set in ``data/sample/``.

Why synthetic: the project needs a small labelled set that can be committed, runs offline, and whose
ground truth is exact. Real tray photos carry licences and guesses; here every label is true by
construction: each tray shows 1-2 dishes drawn in category-specific shapes and colours, and
``food_remaining_pct`` is the share of the drawn food pixels still on the plates (eaten parts show the
plate), rounded to steps of 5.

Deterministic: the same ``--seed`` and ``--count`` give byte-identical files (numpy's seeded PCG64,
Pillow's drawing and libjpeg are all deterministic; nothing depends on time, fonts or hash order).

    python scripts/make_sample_set.py                   # writes data/sample/
    python scripts/make_sample_set.py --out /tmp/s --count 32
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TASK = REPO / "experiments" / "tasks" / "meal_tray.yaml"
DEFAULT_OUT = REPO / "data" / "sample"
SIZE = 256
JPEG_QUALITY = 80
SPLITS = (("train", 0.6), ("validation", 0.2), ("test", 0.2))

Color = tuple[int, int, int]
Rng = np.random.Generator
Drawer = Callable[[ImageDraw.ImageDraw, float, float, float, Rng], None]


# --------------------------------------------------------------------------------------------------
# Small drawing helpers


def _jitter(rng: Rng, color: Color, amount: int = 12) -> tuple[int, int, int, int]:
    r, g, b = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)
    return (r, g, b, 255)


def _pick(rng: Rng, options: Sequence[Color]) -> Color:
    return options[int(rng.integers(len(options)))]


def _ellipse_poly(
    cx: float, cy: float, a: float, b: float, angle: float, n: int = 20
) -> list[tuple[float, float]]:
    """A rotated ellipse as a polygon, since ImageDraw.ellipse cannot rotate."""
    ca, sa = math.cos(angle), math.sin(angle)
    points = []
    for i in range(n):
        t = 2 * math.pi * i / n
        x, y = a * math.cos(t), b * math.sin(t)
        points.append((cx + x * ca - y * sa, cy + x * sa + y * ca))
    return points


def _blob_poly(cx: float, cy: float, radius: float, rng: Rng, n: int = 14, wobble: float = 0.25) -> list:
    """An irregular roundish outline: chunks, leaves and egg whites are never perfect circles."""
    phase = rng.uniform(0, 2 * math.pi)
    radii = radius * (1 + rng.uniform(-wobble, wobble, n))
    return [
        (cx + r * math.cos(phase + 2 * math.pi * i / n), cy + r * math.sin(phase + 2 * math.pi * i / n))
        for i, r in enumerate(radii)
    ]


def _rotated_rect(cx: float, cy: float, w: float, h: float, angle: float) -> list[tuple[float, float]]:
    ca, sa = math.cos(angle), math.sin(angle)
    corners = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in corners]


def _circle(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: tuple) -> None:
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)


def _point_in_disc(rng: Rng, cx: float, cy: float, radius: float) -> tuple[float, float]:
    rho = radius * math.sqrt(rng.uniform(0, 1))
    theta = rng.uniform(0, 2 * math.pi)
    return cx + rho * math.cos(theta), cy + rho * math.sin(theta)


# --------------------------------------------------------------------------------------------------
# One drawer per category: food only, inside a disc of radius rf around (cx, cy)


def draw_soup(d: ImageDraw.ImageDraw, cx: float, cy: float, rf: float, rng: Rng) -> None:
    base = _pick(rng, [(214, 120, 50), (226, 190, 95), (200, 70, 45), (170, 110, 60)])
    _circle(d, cx, cy, rf, _jitter(rng, base))
    for _ in range(int(rng.integers(8, 14))):  # oil droplets
        x, y = _point_in_disc(rng, cx, cy, rf * 0.85)
        _circle(d, x, y, rng.uniform(1.5, 3.5), _jitter(rng, tuple(min(255, c + 35) for c in base)))
    for _ in range(int(rng.integers(40, 80))):  # herb and pepper specks
        x, y = _point_in_disc(rng, cx, cy, rf * 0.92)
        speck = _pick(rng, [(60, 130, 40), (40, 100, 30), (240, 240, 225), (90, 40, 20)])
        _circle(d, x, y, rng.uniform(0.8, 1.8), _jitter(rng, speck, 8))


def draw_stew(d: ImageDraw.ImageDraw, cx: float, cy: float, rf: float, rng: Rng) -> None:
    _circle(d, cx, cy, rf, _jitter(rng, (115, 65, 35)))
    for _ in range(int(rng.integers(10, 16))):
        x, y = _point_in_disc(rng, cx, cy, rf * 0.75)
        chunk = _pick(rng, [(95, 50, 28), (120, 60, 30), (225, 120, 40), (220, 200, 140)])
        d.polygon(
            _blob_poly(x, y, rf * rng.uniform(0.1, 0.18), rng, n=6, wobble=0.35), fill=_jitter(rng, chunk)
        )


def draw_curry(d: ImageDraw.ImageDraw, cx: float, cy: float, rf: float, rng: Rng) -> None:
    sauce = _pick(rng, [(205, 140, 30), (195, 100, 30), (150, 140, 50)])
    _circle(d, cx, cy, rf, _jitter(rng, sauce))
    cream = tuple(min(255, c + 45) for c in sauce)
    start = rng.uniform(0, 360)
    d.arc(
        (cx - rf * 0.6, cy - rf * 0.6, cx + rf * 0.6, cy + rf * 0.6), start, start + 200, fill=cream, width=3
    )
    for _ in range(int(rng.integers(7, 12))):
        x, y = _point_in_disc(rng, cx, cy, rf * 0.72)
        piece = _pick(rng, [(235, 215, 175), (225, 200, 160), (200, 90, 40)])
        d.polygon(_blob_poly(x, y, rf * rng.uniform(0.09, 0.15), rng, n=8), fill=_jitter(rng, piece))
    for _ in range(int(rng.integers(3, 7))):
        x, y = _point_in_disc(rng, cx, cy, rf * 0.8)
        d.polygon(_ellipse_poly(x, y, 5, 2.5, rng.uniform(0, math.pi), 10), fill=_jitter(rng, (50, 120, 40)))


def draw_porridge(d: ImageDraw.ImageDraw, cx: float, cy: float, rf: float, rng: Rng) -> None:
    _circle(d, cx, cy, rf, _jitter(rng, (225, 205, 165)))
    for k in range(3):
        r = rf * (0.25 + 0.2 * k)
        start = rng.uniform(0, 360)
        d.arc((cx - r, cy - r, cx + r, cy + r), start, start + 150, fill=(240, 225, 190, 255), width=2)
    for _ in range(int(rng.integers(5, 11))):
        x, y = _point_in_disc(rng, cx, cy, rf * 0.6)
        _circle(d, x, y, rng.uniform(2.5, 4), _jitter(rng, _pick(rng, [(70, 30, 80), (150, 20, 40)]), 10))
    for _ in range(int(rng.integers(20, 40))):
        x, y = _point_in_disc(rng, cx, cy, rf * 0.9)
        _circle(d, x, y, 0.8, _jitter(rng, (150, 95, 50), 10))


def draw_noodle_dish(d: ImageDraw.ImageDraw, cx: float, cy: float, rf: float, rng: Rng) -> None:
    _circle(d, cx, cy, rf, _jitter(rng, (190, 150, 90)))
    strand = _pick(rng, [(240, 215, 140), (235, 225, 195), (225, 190, 110)])
    for _ in range(int(rng.integers(14, 22))):
        angle = rng.uniform(0, math.pi)
        offset = rng.uniform(-0.75, 0.75) * rf
        freq, phase, amp = rng.uniform(0.12, 0.22), rng.uniform(0, 6.3), rng.uniform(2.5, 5)
        ca, sa = math.cos(angle), math.sin(angle)
        points = []
        for t in np.linspace(-rf, rf, 40):
            u, v = float(t), offset + amp * math.sin(freq * float(t) + phase)
            if u * u + v * v < (rf * 0.95) ** 2:
                points.append((cx + u * ca - v * sa, cy + u * sa + v * ca))
        if len(points) > 1:
            d.line(points, fill=_jitter(rng, strand, 10), width=3, joint="curve")
    for _ in range(int(rng.integers(8, 16))):  # spring onion
        x, y = _point_in_disc(rng, cx, cy, rf * 0.8)
        _circle(d, x, y, rng.uniform(1.5, 2.5), _jitter(rng, (70, 160, 60)))


def draw_rice_dish(d: ImageDraw.ImageDraw, cx: float, cy: float, rf: float, rng: Rng) -> None:
    d.polygon(_blob_poly(cx, cy, rf * 0.82, rng, n=18, wobble=0.1), fill=_jitter(rng, (238, 234, 222), 6))
    for _ in range(int(rf * rf * 0.09)):
        x, y = _point_in_disc(rng, cx, cy, rf * 0.78)
        shade = _pick(rng, [(250, 250, 245), (232, 228, 215), (244, 240, 228), (215, 210, 195)])
        d.polygon(_ellipse_poly(x, y, 2.6, 1.2, rng.uniform(0, math.pi), 8), fill=_jitter(rng, shade, 5))
    if rng.uniform() < 0.5:  # fried rice: diced vegetables
        for _ in range(int(rng.integers(15, 30))):
            x, y = _point_in_disc(rng, cx, cy, rf * 0.7)
            dice = _pick(rng, [(230, 120, 40), (90, 170, 60), (240, 210, 80)])
            d.rectangle((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=_jitter(rng, dice))


def draw_dumpling(d: ImageDraw.ImageDraw, cx: float, cy: float, rf: float, rng: Rng) -> None:
    n = int(rng.integers(4, 7))
    skin = _pick(rng, [(236, 222, 188), (228, 208, 165), (240, 228, 200)])
    edge = tuple(c - 45 for c in skin)
    for i in range(n):
        theta = 2 * math.pi * i / n + rng.uniform(-0.2, 0.2)
        x, y = cx + rf * 0.52 * math.cos(theta), cy + rf * 0.52 * math.sin(theta)
        w, h = rf * 0.36, rf * 0.26
        rot = theta + math.pi / 2
        ca, sa = math.cos(rot), math.sin(rot)

        def place(px: float, py: float, x: float = x, y: float = y, ca: float = ca, sa: float = sa) -> tuple:
            return (x + px * ca - py * sa, y + px * sa + py * ca)

        # a crescent: half an ellipse, flat side towards the plate centre, pleats on the curved edge
        half = [p for p in _ellipse_poly(0, 0, w, h * 2, 0, 28) if p[1] <= 0.01]
        outline = [place(px, py + h) for px, py in half]
        d.polygon(outline, fill=_jitter(rng, skin, 8), outline=_jitter(rng, edge, 5))
        if rng.uniform() < 0.5:  # pan-fried: a browned patch
            d.polygon(
                _ellipse_poly(*place(0, h * 0.3), w * 0.5, h * 0.3, rot, 12),
                fill=_jitter(rng, (200, 140, 60)),
            )
        for k in range(-2, 3):
            d.line(
                [place(k * w * 0.3, -h * 0.6), place(k * w * 0.2, h * 0.2)],
                fill=_jitter(rng, edge, 5),
                width=1,
            )


def draw_bread(d: ImageDraw.ImageDraw, cx: float, cy: float, rf: float, rng: Rng) -> None:
    if rng.uniform() < 0.5:  # rolls: golden domes with a highlight and a slash
        n = int(rng.integers(2, 4))
        for i in range(n):
            theta = 2 * math.pi * i / n + rng.uniform(0, 1)
            x, y = cx + rf * 0.42 * math.cos(theta), cy + rf * 0.42 * math.sin(theta)
            r = rf * rng.uniform(0.3, 0.36)
            d.polygon(_blob_poly(x, y, r, rng, n=16, wobble=0.06), fill=_jitter(rng, (190, 125, 55)))
            _circle(d, x - r * 0.2, y - r * 0.2, r * 0.55, _jitter(rng, (222, 165, 90)))
            d.line(
                [(x - r * 0.5, y + r * 0.1), (x + r * 0.5, y - r * 0.1)],
                fill=_jitter(rng, (240, 215, 160)),
                width=2,
            )
    else:  # slices: pale crumb with a brown crust
        n = int(rng.integers(1, 3))
        rot = rng.uniform(0, math.pi)
        for i in range(n):
            off = (i - (n - 1) / 2) * rf * 0.5
            x, y = cx + off * math.cos(rot), cy + off * math.sin(rot)
            side = rf * (0.85 if n == 1 else 0.7)
            d.polygon(_rotated_rect(x, y, side, side * 1.1, rot + 0.2 * i), fill=_jitter(rng, (150, 95, 45)))
            d.polygon(
                _rotated_rect(x, y, side * 0.84, side * 0.94, rot + 0.2 * i),
                fill=_jitter(rng, (238, 222, 185)),
            )
            for _ in range(25):  # air holes in the crumb
                hx, hy = _point_in_disc(rng, x, y, side * 0.35)
                _circle(d, hx, hy, rng.uniform(0.6, 1.6), _jitter(rng, (215, 195, 150), 6))


def draw_sandwich(d: ImageDraw.ImageDraw, cx: float, cy: float, rf: float, rng: Rng) -> None:
    rot = rng.uniform(0, 2 * math.pi)
    for side in (-1, 1):
        s = rf * 0.85
        tri = [(-s * 0.5, side * 0.08 * s), (s * 0.5, side * 0.08 * s), (0, side * 0.9 * s)]
        ca, sa = math.cos(rot), math.sin(rot)
        pts = [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in tri]
        d.polygon(pts, fill=_jitter(rng, (180, 130, 70)))
        mx, my = sum(p[0] for p in pts) / 3, sum(p[1] for p in pts) / 3
        inner = [(mx + 0.8 * (px - mx), my + 0.8 * (py - my)) for px, py in pts]
        d.polygon(inner, fill=_jitter(rng, (236, 212, 165)))  # crumb inside the crust
        filling = [pts[0], pts[1]]
        d.line(filling, fill=_jitter(rng, (90, 170, 60)), width=4)
        d.line(filling, fill=_jitter(rng, (215, 60, 50)), width=2)


def draw_pastry(d: ImageDraw.ImageDraw, cx: float, cy: float, rf: float, rng: Rng) -> None:
    n = int(rng.integers(1, 3))
    for i in range(n):
        x0 = cx + (0 if n == 1 else (i - 0.5) * rf * 0.95)
        y0 = cy + (0 if n == 1 else rng.uniform(-0.15, 0.15) * rf)
        scale = rf * (0.95 if n == 1 else 0.55)
        rot = rng.uniform(0, 2 * math.pi)
        ca, sa = math.cos(rot), math.sin(rot)
        for k in range(-3, 4):  # overlapping layered segments along an arc: a croissant
            t = k / 3 * 1.15
            u, v = scale * 0.62 * math.sin(t), -scale * 0.45 * math.cos(t)
            x, y = x0 + u * ca - v * sa, y0 + u * sa + v * ca
            size = scale * (0.36 - 0.06 * abs(k))
            shade = (218, 150, 60) if k % 2 == 0 else (185, 112, 40)
            d.polygon(_ellipse_poly(x, y, size * 0.8, size, t + rot, 14), fill=_jitter(rng, shade, 8))


def draw_dessert(d: ImageDraw.ImageDraw, cx: float, cy: float, rf: float, rng: Rng) -> None:
    rot = rng.uniform(0, 2 * math.pi)
    spread = rng.uniform(0.6, 0.9)
    length = rf * 1.1
    tip = (cx - length * 0.5 * math.cos(rot), cy - length * 0.5 * math.sin(rot))
    back = [
        (tip[0] + length * math.cos(rot + s * spread / 2), tip[1] + length * math.sin(rot + s * spread / 2))
        for s in (-1, 1)
    ]
    sponge, layer = [
        ((238, 190, 130), (250, 246, 236)),  # sponge with cream
        ((110, 60, 35), (235, 215, 190)),  # chocolate with cream
        ((245, 170, 185), (250, 240, 240)),  # strawberry mousse
    ][int(rng.integers(3))]
    d.polygon([tip, *back], fill=_jitter(rng, sponge), outline=_jitter(rng, tuple(c - 40 for c in sponge)))
    for frac in (0.4, 0.7):
        a = (tip[0] + (back[0][0] - tip[0]) * frac, tip[1] + (back[0][1] - tip[1]) * frac)
        b = (tip[0] + (back[1][0] - tip[0]) * frac, tip[1] + (back[1][1] - tip[1]) * frac)
        d.line([a, b], fill=_jitter(rng, layer, 5), width=3)
    d.line(back, fill=_jitter(rng, layer, 5), width=6)
    mid = ((back[0][0] * 0.6 + back[1][0] * 0.4), (back[0][1] * 0.6 + back[1][1] * 0.4))
    _circle(d, mid[0], mid[1], rf * 0.13, _jitter(rng, (250, 245, 235), 5))
    _circle(d, mid[0], mid[1], rf * 0.08, _jitter(rng, (205, 25, 45)))


def draw_fruit(d: ImageDraw.ImageDraw, cx: float, cy: float, rf: float, rng: Rng) -> None:
    for _ in range(int(rng.integers(7, 13))):
        x, y = _point_in_disc(rng, cx, cy, rf * 0.7)
        kind = int(rng.integers(4))
        if kind == 0:  # grape
            _circle(d, x, y, rf * 0.1, _jitter(rng, _pick(rng, [(90, 40, 90), (150, 190, 80)])))
        elif kind == 1:  # kiwi slice
            _circle(d, x, y, rf * 0.16, _jitter(rng, (120, 170, 50)))
            _circle(d, x, y, rf * 0.05, _jitter(rng, (230, 235, 200)))
        elif kind == 2:  # melon cube
            s = rf * 0.12
            d.polygon(
                _rotated_rect(x, y, s * 2, s * 2, rng.uniform(0, math.pi)), fill=_jitter(rng, (245, 160, 80))
            )
        else:  # strawberry
            d.polygon(_blob_poly(x, y, rf * 0.12, rng, n=8, wobble=0.15), fill=_jitter(rng, (210, 30, 45)))


def draw_salad(d: ImageDraw.ImageDraw, cx: float, cy: float, rf: float, rng: Rng) -> None:
    for _ in range(int(rng.integers(25, 40))):
        x, y = _point_in_disc(rng, cx, cy, rf * 0.78)
        leaf = _pick(rng, [(80, 160, 50), (120, 190, 70), (50, 120, 40), (150, 200, 90)])
        a = rf * rng.uniform(0.12, 0.2)
        d.polygon(_ellipse_poly(x, y, a, a * 0.55, rng.uniform(0, math.pi), 12), fill=_jitter(rng, leaf))
    for _ in range(int(rng.integers(3, 7))):
        x, y = _point_in_disc(rng, cx, cy, rf * 0.7)
        _circle(
            d, x, y, rf * 0.08, _jitter(rng, _pick(rng, [(220, 50, 40), (235, 240, 215), (130, 60, 120)]))
        )


def draw_meat_dish(d: ImageDraw.ImageDraw, cx: float, cy: float, rf: float, rng: Rng) -> None:
    rot = rng.uniform(0, math.pi)
    n = int(rng.integers(2, 4))
    for i in range(n):
        off = (i - (n - 1) / 2) * rf * 0.45
        x, y = cx - off * math.sin(rot), cy + off * math.cos(rot)
        w, h = rf * rng.uniform(0.9, 1.2), rf * rng.uniform(0.32, 0.4)
        d.polygon(_rotated_rect(x, y, w, h, rot), fill=_jitter(rng, (125, 68, 38)))
        for k in (-0.25, 0.0, 0.25):  # grill marks
            gx, gy = x + k * w * math.cos(rot), y + k * w * math.sin(rot)
            d.polygon(_rotated_rect(gx, gy, 2.5, h * 0.85, rot + 0.4), fill=_jitter(rng, (60, 30, 15), 6))
    if rng.uniform() < 0.6:  # green beans alongside
        for _ in range(int(rng.integers(4, 8))):
            x, y = _point_in_disc(rng, cx, cy, rf * 0.75)
            d.polygon(
                _ellipse_poly(x, y, rf * 0.18, 2.2, rng.uniform(0, math.pi), 10),
                fill=_jitter(rng, (70, 140, 50)),
            )


def draw_seafood_dish(d: ImageDraw.ImageDraw, cx: float, cy: float, rf: float, rng: Rng) -> None:
    for _ in range(int(rng.integers(4, 8))):
        x, y = _point_in_disc(rng, cx, cy, rf * 0.55)
        r = rf * rng.uniform(0.18, 0.25)
        start = rng.uniform(0, 360)
        body = _jitter(rng, _pick(rng, [(240, 130, 90), (245, 150, 120), (235, 110, 70)]))
        d.arc((x - r, y - r, x + r, y + r), start, start + 230, fill=body, width=int(r * 0.55))
        for k in range(1, 5):  # segments
            ang = math.radians(start + 230 * k / 5)
            inner, outer = r - r * 0.5, r
            d.line(
                [
                    (x + inner * math.cos(ang), y + inner * math.sin(ang)),
                    (x + outer * math.cos(ang), y + outer * math.sin(ang)),
                ],
                fill=(255, 200, 170, 255),
                width=1,
            )
        end = math.radians(start + 230)
        tx, ty = x + r * 0.8 * math.cos(end), y + r * 0.8 * math.sin(end)
        d.polygon(_blob_poly(tx, ty, r * 0.3, rng, n=3, wobble=0.1), fill=_jitter(rng, (200, 60, 40)))


def draw_egg_dish(d: ImageDraw.ImageDraw, cx: float, cy: float, rf: float, rng: Rng) -> None:
    if rng.uniform() < 0.5:  # fried eggs
        n = int(rng.integers(1, 3))
        for i in range(n):
            x = cx + (0 if n == 1 else (i - 0.5) * rf * 0.85)
            y = cy + rng.uniform(-0.1, 0.1) * rf
            d.polygon(
                _blob_poly(x, y, rf * (0.6 if n == 1 else 0.42), rng, n=14, wobble=0.18),
                fill=_jitter(rng, (250, 248, 240), 4),
            )
            _circle(
                d, x + rng.uniform(-3, 3), y + rng.uniform(-3, 3), rf * 0.16, _jitter(rng, (245, 180, 20), 8)
            )
    else:  # folded omelette
        rot = rng.uniform(0, 2 * math.pi)
        half = [p for p in _ellipse_poly(0, 0, rf * 0.8, rf * 0.8, 0, 32) if p[1] >= -0.01]
        ca, sa = math.cos(rot), math.sin(rot)
        pts = [(cx + x * ca - (y - rf * 0.3) * sa, cy + x * sa + (y - rf * 0.3) * ca) for x, y in half]
        d.polygon(pts, fill=_jitter(rng, (245, 205, 80)))
        for _ in range(int(rng.integers(6, 12))):
            x, y = _point_in_disc(rng, cx, cy, rf * 0.4)
            _circle(d, x, y, rng.uniform(1.5, 3), _jitter(rng, (225, 170, 60), 8))


DRAWERS: dict[str, Drawer] = {
    "soup": draw_soup,
    "stew": draw_stew,
    "curry": draw_curry,
    "porridge": draw_porridge,
    "noodle dish": draw_noodle_dish,
    "rice dish": draw_rice_dish,
    "dumpling": draw_dumpling,
    "bread": draw_bread,
    "sandwich": draw_sandwich,
    "pastry": draw_pastry,
    "dessert": draw_dessert,
    "fruit": draw_fruit,
    "salad": draw_salad,
    "meat dish": draw_meat_dish,
    "seafood dish": draw_seafood_dish,
    "egg dish": draw_egg_dish,
}
BOWL_CATEGORIES = frozenset({"soup", "stew", "curry", "porridge", "noodle dish"})


# --------------------------------------------------------------------------------------------------
# Trays


@dataclass(frozen=True)
class Tray:
    id: str
    categories: tuple[str, ...]
    food_remaining_pct: int
    split: str


def _vessel(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, bowl: bool, rng: Rng) -> float:
    """Draw a plate or bowl; returns the radius food may occupy."""
    base = _pick(rng, [(246, 246, 243), (240, 234, 220), (226, 233, 240), (235, 240, 232)])
    shadow = (70, 70, 70, 255)
    _circle(draw, cx + 2, cy + 3, r, shadow)
    _circle(draw, cx, cy, r, _jitter(rng, base, 4))
    if bowl:
        _circle(draw, cx, cy, r * 0.86, _jitter(rng, tuple(c - 40 for c in base), 4))
        _circle(draw, cx, cy, r * 0.8, _jitter(rng, tuple(c - 15 for c in base), 4))
        return r * 0.78
    _circle(draw, cx, cy, r * 0.74, _jitter(rng, tuple(c - 12 for c in base), 4))
    _circle(draw, cx, cy, r * 0.71, _jitter(rng, base, 4))
    return r * 0.8


def _cutlery(draw: ImageDraw.ImageDraw, x: float, y: float, length: float, rng: Rng) -> None:
    steel = _jitter(rng, (190, 192, 198), 6)
    draw.rounded_rectangle((x, y, x + 6, y + length), radius=3, fill=steel)  # knife
    draw.rounded_rectangle(
        (x + 14, y + length * 0.3, x + 19, y + length), radius=2, fill=steel
    )  # fork handle
    draw.rectangle((x + 11, y, x + 22, y + length * 0.32), fill=steel)  # fork head
    for k in range(3):
        draw.line(
            [(x + 14 + k * 3, y), (x + 14 + k * 3, y + length * 0.2)], fill=(120, 120, 125, 255), width=1
        )


def _eating_order(shape: tuple[int, int], cx: float, cy: float, r: float, rng: Rng) -> np.ndarray:
    """A score per pixel; food with the lowest scores is eaten first.

    Eating proceeds from one side with a ragged front (smooth noise), so leftovers look like
    leftovers rather than a random sprinkle.
    """
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    projection = ((xs - cx) * math.cos(angle) + (ys - cy) * math.sin(angle)) / max(r, 1.0)
    coarse = rng.uniform(0, 255, (6, 6)).astype(np.uint8)
    noise = np.asarray(Image.fromarray(coarse, "L").resize(shape[::-1], Image.Resampling.BICUBIC), np.float64)
    return projection + 0.8 * (noise / 255.0 - 0.5)


def _keep_mask(food: np.ndarray, order: np.ndarray, keep: int) -> np.ndarray:
    """Exactly ``keep`` food pixels survive: the ones with the highest eating-order scores."""
    mask = np.zeros_like(food)
    if keep <= 0:
        return mask
    flat = np.flatnonzero(food)
    ranked = flat[np.argsort(-order.ravel()[flat], kind="stable")]
    mask.ravel()[ranked[:keep]] = True
    return mask


def render_tray(categories: Sequence[str], remaining_pct: int, rng: Rng) -> Image.Image:
    table = _pick(rng, [(92, 70, 52), (60, 62, 68), (120, 100, 80), (45, 48, 58)])
    canvas = Image.new("RGB", (SIZE, SIZE), _jitter(rng, table, 8)[:3])
    draw = ImageDraw.Draw(canvas)
    tray = _pick(rng, [(205, 205, 200), (215, 200, 170), (150, 165, 185), (190, 195, 205)])
    draw.rounded_rectangle((14, 24, 242, 232), radius=14, fill=_jitter(rng, tray, 6)[:3])

    def j() -> float:  # small positional jitter
        return float(rng.integers(-3, 4))

    if len(categories) == 1:
        places = [(128 + j(), 124 + j(), float(rng.integers(80, 88)))]
        draw.ellipse((206, 36, 236, 66), fill=(238, 238, 238))  # an empty cup, not food
        draw.ellipse((212, 42, 230, 60), fill=(200, 200, 205))
        _cutlery(draw, 210 + j(), 158 + j(), 62, rng)
    else:
        places = [
            (88 + j(), 150 + j(), float(rng.integers(62, 68))),
            (188 + j(), 80 + j(), float(rng.integers(40, 46))),
        ]
        _cutlery(draw, 190 + j(), 150 + j(), 70, rng)

    rgba = canvas.convert("RGBA")
    vessel_draw = ImageDraw.Draw(rgba)
    layers = []
    for category, (cx, cy, r) in zip(categories, places, strict=True):
        rf = _vessel(vessel_draw, cx, cy, r, category in BOWL_CATEGORIES, rng)
        layer = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
        DRAWERS[category](ImageDraw.Draw(layer), cx, cy, rf, rng)
        pixels = np.asarray(layer, dtype=np.int16)
        ys, xs = np.mgrid[0:SIZE, 0:SIZE]
        food = (pixels[..., 3] > 0) & ((xs - cx) ** 2 + (ys - cy) ** 2 <= rf * rf)
        texture = rng.normal(0, 6, (SIZE, SIZE, 1))
        colours = np.clip(pixels[..., :3] + texture, 0, 255).astype(np.uint8)
        layers.append((food, colours, _eating_order((SIZE, SIZE), cx, cy, rf, rng)))

    areas = [int(food.sum()) for food, _, _ in layers]
    target = round(remaining_pct / 100 * sum(areas))
    keeps = [target]
    if len(layers) == 2:  # split what is left between the dishes at random, keeping the exact total
        low, high = max(0, target - areas[1]), min(areas[0], target)
        first = int(rng.integers(low, high + 1))
        keeps = [first, target - first]

    out = np.asarray(rgba.convert("RGB"), dtype=np.float64)
    for (food, colours, order), keep in zip(layers, keeps, strict=True):
        left = _keep_mask(food, order, keep)
        # eaten parts show the plate, with the faint blurred smear real plates keep (so an empty
        # plate still hints at what was on it); covered pixels stay the measure of what is left
        eaten = Image.fromarray(((food & ~left) * 255).astype(np.uint8), "L").filter(
            ImageFilter.GaussianBlur(5)
        )
        alpha = np.asarray(eaten, np.float64)[..., None] / 255.0 * 0.1
        smear = colours[food].mean(axis=0) if food.any() else np.zeros(3)
        out = out * (1 - alpha) + smear * alpha
        out[left] = colours[left]
    out = out.round().astype(np.uint8)

    image = Image.fromarray(out, "RGB").filter(ImageFilter.GaussianBlur(0.6))
    # light from the top-left, and sensor noise: cheap cues that this is a photo, not a diagram
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    light = 1.06 - 0.12 * (xs + ys) / (2 * SIZE)
    noisy = np.asarray(image, np.float64) * light[..., None] + rng.normal(0, 2.5, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8), "RGB")


def plan_trays(count: int, seed: int, categories: Sequence[str]) -> list[tuple[str, tuple[str, ...], int]]:
    """Ids, categories and grades for ``count`` trays; primary categories cycle so all are balanced."""
    rng = np.random.default_rng([seed, 0])
    plan = []
    for index in range(count):
        primary = categories[index % len(categories)]
        chosen: tuple[str, ...] = (primary,)
        if rng.uniform() < 0.5:
            others = [c for c in categories if c != primary]
            chosen = (primary, others[int(rng.integers(len(others)))])
        grade = int(rng.integers(0, 21)) * 5
        plan.append((f"tray-{index + 1:04d}", chosen, grade))
    return plan


def assign_splits(plan: Sequence[tuple[str, tuple[str, ...], int]], seed: int) -> dict[str, str]:
    """train/validation/test ~ 60/20/20 within each primary category, so every split sees every dish."""
    rng = np.random.default_rng([seed, 1])
    by_primary: dict[str, list[str]] = {}
    for tray_id, categories, _ in plan:
        by_primary.setdefault(categories[0], []).append(tray_id)
    splits: dict[str, str] = {}
    for primary in sorted(by_primary):
        ids = by_primary[primary]
        shuffled = [ids[i] for i in rng.permutation(len(ids))]
        n_train = round(len(ids) * SPLITS[0][1])
        n_val = round(len(ids) * SPLITS[1][1])
        for position, tray_id in enumerate(shuffled):
            split = "train" if position < n_train else "validation" if position < n_train + n_val else "test"
            splits[tray_id] = split
    return splits


def _readme(trays: Sequence[Tray], command: str) -> str:
    per_split = {name: sum(t.split == name for t in trays) for name, _ in SPLITS}
    two = sum(len(t.categories) == 2 for t in trays)
    lines = [
        "# Synthetic meal-tray sample set",
        "",
        "**Every image here is synthetic.** They are drawn by `scripts/make_sample_set.py` with Pillow and",
        "numpy (seeded), not photographed: top-down trays with 1–2 plates or bowls, each dish drawn in",
        "category-specific shapes and colours (soup = a bowl of liquid with specks, rice dish = a white grainy",
        "mound, noodle dish = wavy strands, salad = green leaf blobs, ...). The labels are exact by",
        "construction: `food_remaining_pct` is the share of the drawn food pixels still on the plates (eaten",
        "parts show the plate, with a faint smear), in steps of 5. Trays also hold an empty cup and cutlery,",
        "which are not food. Use the set to exercise the pipeline and compare prompts, not to claim",
        "real-world accuracy.",
        "",
        "Regenerate (byte-identical output for the same arguments):",
        "",
        "```",
        command,
        "```",
        "",
        f"- {len(trays)} JPEG images, {SIZE}×{SIZE}, quality {JPEG_QUALITY}, in `images/`",
        f"- {two} trays with two dishes, {len(trays) - two} with one",
        "- splits (stratified by the first category): "
        + ", ".join(f"{name} {count}" for name, count in per_split.items()),
        "- `labels.csv` columns: `id,file,categories,food_remaining_pct,split`; `categories` is `;`-separated",
        "",
        "Categories drawn (names from `experiments/tasks/meal_tray.yaml`; the task's other categories are",
        "never drawn, so a model naming them is simply wrong here):",
        "",
    ]
    used = sorted({c for t in trays for c in t.categories})
    lines += [f"- {name} ({sum(name in t.categories for t in trays)} trays)" for name in used]
    return "\n".join(lines) + "\n"


def generate(out: Path, count: int, seed: int, task_path: Path) -> list[Tray]:
    allowed = _task_categories(task_path)
    missing = sorted(set(DRAWERS) - set(allowed))
    if missing:
        raise SystemExit(f"{task_path}: categories {missing} are drawn here but not in the task file")
    categories = [c for c in allowed if c in DRAWERS]  # task order, so the plan is stable
    plan = plan_trays(count, seed, categories)
    splits = assign_splits(plan, seed)

    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for stale in images.glob("tray-*.jpg"):  # only our own files: a smaller --count must not leave extras
        stale.unlink()
    trays = []
    for index, (tray_id, chosen, grade) in enumerate(plan):
        rng = np.random.default_rng([seed, 2, index])
        image = render_tray(chosen, grade, rng)
        image.save(images / f"{tray_id}.jpg", format="JPEG", quality=JPEG_QUALITY, optimize=False)
        trays.append(Tray(tray_id, chosen, grade, splits[tray_id]))

    with (out / "labels.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "file", "categories", "food_remaining_pct", "split"])
        for tray in trays:
            writer.writerow(
                [
                    tray.id,
                    f"images/{tray.id}.jpg",
                    ";".join(tray.categories),
                    tray.food_remaining_pct,
                    tray.split,
                ]
            )

    command = "python scripts/make_sample_set.py"
    if count != DEFAULT_COUNT or seed != DEFAULT_SEED:
        command += f" --count {count} --seed {seed}"
    (out / "README.md").write_text(_readme(trays, command), encoding="utf-8")
    return trays


def _task_categories(task_path: Path) -> list[str]:
    sys.path.insert(0, str(REPO / "evaluator"))
    from promptgrade.task import load_task  # the task file is the one source of category names

    return list(load_task(task_path).categories)


DEFAULT_COUNT = 320
DEFAULT_SEED = 20240611


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: data/sample)")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="number of trays")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--task", type=Path, default=DEFAULT_TASK, help="task file with the category names")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    trays = generate(args.out, args.count, args.seed, args.task)
    print(f"wrote {len(trays)} trays to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
