"""The loss curve as a PNG, drawn with zlib alone.

matplotlib would add tens of megabytes and a second of import to a command that needs one
chart; a line plot with axes and numbered ticks is a few dozen lines of pixels. Training loss is
drawn in blue (raw, light; smoothed, dark), held-out loss as red squares.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

# 3x5 glyphs for tick labels, one string of 15 bits per character (rows top to bottom)
_GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", "k": "100101110101101",
}
Color = tuple[int, int, int]
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (200, 200, 200)
LIGHT_BLUE, BLUE, RED = (170, 190, 240), (20, 60, 200), (210, 30, 30)


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.px = bytearray(WHITE * (width * height))

    def set(self, x: int, y: int, c: Color) -> None:
        if 0 <= x < self.w and 0 <= y < self.h:
            i = 3 * (y * self.w + x)
            self.px[i:i + 3] = bytes(c)

    def line(self, x0: int, y0: int, x1: int, y1: int, c: Color) -> None:
        n = max(abs(x1 - x0), abs(y1 - y0), 1)
        for k in range(n + 1):
            self.set(round(x0 + (x1 - x0) * k / n), round(y0 + (y1 - y0) * k / n), c)

    def text(self, x: int, y: int, s: str, c: Color = BLACK, scale: int = 2) -> None:
        for ch in s:
            bits = _GLYPHS.get(ch)
            if bits is not None:
                for r in range(5):
                    for col in range(3):
                        if bits[r * 3 + col] == "1":
                            for dy in range(scale):
                                for dx in range(scale):
                                    self.set(x + col * scale + dx, y + r * scale + dy, c)
            x += 4 * scale

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(self.px[3 * y * self.w:3 * (y + 1) * self.w]) for y in range(self.h))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)  # 8-bit RGB
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + \
            chunk(b"IEND", b"")


def _label(v: float) -> str:
    if abs(v) >= 10_000:
        return f"{v / 1000:.0f}k"
    return f"{v:.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.2f}"


def smooth(values: Sequence[float], alpha: float = 0.1) -> list[float]:
    out: list[float] = []
    for v in values:
        out.append(v if not out else out[-1] + alpha * (v - out[-1]))
    return out


def render_loss_curve(losses: Sequence[float], val_losses: Sequence[tuple[int, float]] = (),
                      width: int = 720, height: int = 400) -> bytes:
    """PNG bytes: x is the optimizer step (1-based), y the loss."""
    c = Canvas(width, height)
    left, right, top, bottom = 60, width - 20, 20, height - 40
    points = [v for v in losses if math.isfinite(v)] + [v for _, v in val_losses if math.isfinite(v)]
    n = max(len(losses), max((s for s, _ in val_losses), default=0), 2)
    lo, hi = (min(points), max(points)) if points else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5

    def xy(step: float, v: float) -> tuple[int, int]:
        return (round(left + (right - left) * (step - 1) / (n - 1)),
                round(bottom - (bottom - top) * (v - lo) / (hi - lo)))

    for k in range(5):  # horizontal grid with loss labels
        v = lo + (hi - lo) * k / 4
        _, y = xy(1, v)
        c.line(left, y, right, y, GREY)
        c.text(4, y - 5, _label(v))
    for k in range(5):  # step labels
        step = 1 + (n - 1) * k / 4
        x, _ = xy(step, lo)
        c.line(x, bottom, x, bottom + 4, BLACK)
        c.text(x - 10, bottom + 10, _label(round(step)))
    c.line(left, top, left, bottom, BLACK)
    c.line(left, bottom, right, bottom, BLACK)
    for series, color in ((list(losses), LIGHT_BLUE), (smooth(losses), BLUE)):
        prev = None
        for i, v in enumerate(series):
            if not math.isfinite(v):
                prev = None
                continue
            p = xy(i + 1, v)
            if prev is not None:
                c.line(*prev, *p, color)
            prev = p
    for step, v in val_losses:
        if math.isfinite(v):
            x, y = xy(step, v)
            for dx in range(-3, 4):
                for dy in range(-3, 4):
                    c.set(x + dx, y + dy, RED)
    return c.png()


def save_loss_curve(path: Path, losses: Sequence[float], val_losses: Sequence[tuple[int, float]] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(render_loss_curve(losses, val_losses))
    os.replace(tmp, path)
