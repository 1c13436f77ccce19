"""Labels on the contact sheet of ``framepipe inspect --png``: a 3×5 pixel font for frame
ids, drawn with numpy, so the sheet says which frame each row is without OpenCV.
"""

from __future__ import annotations

import numpy as np

#: each glyph: five rows of three pixels, "#" on
_GLYPHS = {
    "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"),
    "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", ".#.", ".#.", ".#."),
    "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "###"),
    "i": (".#.", "...", ".#.", ".#.", ".#."),
    "d": ("..#", "..#", "###", "#.#", "###"),
    "#": ("#.#", "###", "#.#", "###", "#.#"),
    " ": ("...", "...", "...", "...", "..."),
}
#: pixels per font pixel
SCALE = 3
#: the height of a label strip: the glyphs and a margin above and below
STRIP = 5 * SCALE + 2 * SCALE


def render_label(text: str, scale: int = SCALE) -> np.ndarray:
    """``text`` (digits, ``i``, ``d``, ``#``, spaces) as a uint8 image: black on white."""
    glyphs = [_GLYPHS[ch] for ch in text if ch in _GLYPHS]
    if not glyphs:
        return np.full((5 * scale, scale), 255, np.uint8)
    cols = []
    for glyph in glyphs:
        bits = np.array([[c == "#" for c in row] for row in glyph])
        cols.append(bits)
        cols.append(np.zeros((5, 1), bool))  # one pixel between glyphs
    on = np.hstack(cols[:-1])
    img = np.where(on, 0, 255).astype(np.uint8)
    return np.kron(img, np.ones((scale, scale), np.uint8)) if scale > 1 else img


def label_strip(text: str, width: int) -> np.ndarray:
    """A white strip ``width`` pixels wide with ``text`` at its left: goes above a row."""
    strip = np.full((STRIP, width), 255, np.uint8)
    label = render_label(text)[:, : max(0, width - SCALE)]
    strip[SCALE : SCALE + label.shape[0], SCALE : SCALE + label.shape[1]] = label
    return strip
