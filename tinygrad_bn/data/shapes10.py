"""Shapes10: a procedural 10-class image set built into the package (no files, no network).

Each image is one pattern drawn at a random position, size, rotation and colour on a random
background with a brightness gradient and Gaussian luminance noise. Classes:

    0 disk        filled circle                  5 horizontal stripes  within 15 deg of horizontal
    1 square      filled, any rotation           6 vertical stripes    within 15 deg of vertical
    2 triangle    equilateral, any rotation      7 checkerboard        within 20 deg of the axes
    3 ring        inner/outer radius 0.45-0.7    8 diagonal lines      thin, at +-45 deg (+-10 deg)
    4 cross       plus sign, any rotation        9 dots                a grid of small dots

Shapes (0-4) have diameters from 0.2 to 0.75 of the image; textures (5-9) fill a rotated square
window of half-size at least 0.22 of the image. Patterns may be clipped by the border.

Hard enough to be worth a CNN: the brightness contrast between pattern and background can be as
low as 0.25 (before a random per-channel tint), the noise sigma is up to 0.12, and at 16x16 thin
stripes and small triangles alias. Learnable: every class is a local shape or texture, so
convolutions, pooling and BatchNorm meet it as they meet real photos. (A 3-layer BatchNorm CNN
reaches about 80% test accuracy after 6 epochs at 32x32, still improving.)

Generation is vectorised per class (one NumPy expression over all images of a class): 10,000
32x32 images take about 0.4 s on one core. The stream depends only on (seed, split, image_size),
so the same arguments give the same bytes, and train and test use different streams.
"""
import numpy as np

from tinygrad_bn.data.dataset import ImageDataset

CLASSES = ("disk", "square", "triangle", "ring", "cross", "horizontal stripes", "vertical stripes",
           "checkerboard", "diagonal lines", "dots")
FIRST_TEXTURE = 5
MIN_TEXTURE_RADIUS = 0.22  # of the image size
DEFAULT_SIZES = {True: 10000, False: 2000}
SPLIT_STREAM = {True: 0, False: 1}  # train and test draw from different streams of one seed


class Shapes10(ImageDataset):
    """Shapes10(train=True, n=None, seed=0, image_size=32): n images (10,000 train / 2,000 test
    by default), float32 (n, 3, S, S) in [0, 1], int64 labels, exactly balanced classes."""

    classes = CLASSES

    def __init__(self, train=True, n=None, seed=0, image_size=32):
        n = DEFAULT_SIZES[bool(train)] if n is None else n
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"Shapes10: n must be a non-negative int, got {n!r}")
        if not isinstance(image_size, (int, np.integer)) or image_size < 8:
            raise ValueError(f"Shapes10: image_size must be an int >= 8, got {image_size!r}")
        self.train, self.seed, self.image_size = bool(train), seed, int(image_size)
        rng = np.random.default_rng([seed, SPLIT_STREAM[self.train], int(image_size)])
        images, labels = generate(int(n), int(image_size), rng)
        super().__init__(images, labels)


def generate(n, size, rng):
    """n images (n, 3, size, size) float32 and their labels, drawn from the generator rng."""
    labels = rng.permutation(np.arange(n) % 10)  # exactly balanced (up to n % 10)
    params = _draw_params(n, size, rng)
    mask = np.zeros((n, size, size), np.float32)
    centre = np.arange(size, dtype=np.float32) + 0.5  # pixel centres
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        if idx.size == 0:
            continue
        p = {k: v[idx][:, None, None] for k, v in params.items()}
        if c >= FIRST_TEXTURE:  # a texture needs a few periods to be recognisable
            p["r"] = np.maximum(p["r"], np.float32(MIN_TEXTURE_RADIUS * size))
        # local coordinates (u, v): origin at the pattern's centre, axes rotated by its angle
        dx = centre[None, None, :] - p["cx"]
        dy = centre[None, :, None] - p["cy"]
        cos, sin = np.cos(p["angle"]), np.sin(p["angle"])
        u, v = dx * cos + dy * sin, -dx * sin + dy * cos
        mask[idx] = _PATTERNS[c](u, v, p)
    # luminance noise (one draw per pixel, shared by the channels, as from a camera sensor);
    # the channels are filled one at a time to keep temporaries to one channel's size
    noise = rng.standard_normal((n, size, size), dtype=np.float32)
    noise *= params["noise"][:, None, None]
    noise += (params["grad_x"][:, None, None] * (centre[None, None, :] / size - 0.5)
              + params["grad_y"][:, None, None] * (centre[None, :, None] / size - 0.5))
    step = params["fg"] - params["bg"]  # (n, 3)
    images = np.empty((n, 3, size, size), np.float32)
    for channel in range(3):
        np.multiply(mask, step[:, channel, None, None], out=images[:, channel])
        images[:, channel] += noise
        images[:, channel] += params["bg"][:, channel, None, None]
    np.clip(images, 0.0, 1.0, out=images)
    return images, labels.astype(np.int64)


def _draw_params(n, size, rng):
    """Per-image position, size, angle, colours, gradient and noise level (float32)."""
    f32 = np.float32
    radius = rng.uniform(0.1, 0.375, n) * size  # half-size of the pattern
    # centres keep most of the pattern inside; a little clipping by the border is allowed
    margin = 0.7 * radius
    cx = margin + rng.random(n) * (size - 2 * margin)
    cy = margin + rng.random(n) * (size - 2 * margin)
    # brightness of background and pattern differ by at least 0.25; each channel gets a tint
    bg_level = rng.random(n)
    contrast = rng.uniform(0.25, 0.7, n) * rng.choice([-1.0, 1.0], n)
    fg_level = bg_level + contrast
    fg_level = np.where((fg_level < 0) | (fg_level > 1), bg_level - contrast, fg_level)
    tint = lambda: rng.uniform(-0.2, 0.2, (n, 3))  # noqa: E731
    return {
        "cx": cx.astype(f32), "cy": cy.astype(f32), "r": radius.astype(f32),
        "angle": rng.uniform(-np.pi, np.pi, n).astype(f32),
        # in [-1, 1]: each oriented texture scales it to its own maximum tilt
        "jitter": rng.uniform(-1.0, 1.0, n).astype(f32),
        "diag_sign": rng.choice([-1.0, 1.0], n).astype(f32),
        "period": (rng.uniform(0.13, 0.25, n) * size).astype(f32),
        "inner": rng.uniform(0.45, 0.7, n).astype(f32),
        "arm": rng.uniform(0.2, 0.32, n).astype(f32),
        "bg": np.clip(bg_level[:, None] + tint(), 0, 1).astype(f32),
        "fg": np.clip(fg_level[:, None] + tint(), 0, 1).astype(f32),
        "grad_x": rng.uniform(-0.3, 0.3, n).astype(f32),
        "grad_y": rng.uniform(-0.3, 0.3, n).astype(f32),
        "noise": rng.uniform(0.02, 0.12, n).astype(f32),
    }


def _rotate(u, v, angle):
    cos, sin = np.cos(angle), np.sin(angle)
    return u * cos + v * sin, -u * sin + v * cos


def _frac(x):
    """x - floor(x), in [0, 1) (np.mod does the same, several times slower)."""
    return x - np.floor(x)


def _window(u, v, p):
    """The rotated square a texture fills."""
    return (np.abs(u) <= p["r"]) & (np.abs(v) <= p["r"])


def _stripes(u, v, p, base_angle, max_jitter, duty):
    """Bands of the given duty cycle across direction base_angle (+- max_jitter), in the window.

    Stripes are defined in image axes (not the random rotation), so horizontal stays horizontal."""
    angle = base_angle + max_jitter * p["jitter"] - p["angle"]  # undo the pattern's rotation
    along, across = _rotate(u, v, angle)
    return _window(u, v, p) & (_frac(across / p["period"]) < duty)


def _disk(u, v, p):
    return u * u + v * v <= p["r"] ** 2


def _square(u, v, p):
    half = 0.85 * p["r"]  # same area as the disk, roughly
    return (np.abs(u) <= half) & (np.abs(v) <= half)


def _triangle(u, v, p):
    # inside the three edges of an equilateral triangle of circumradius r (inradius r / 2)
    inside = np.ones(np.broadcast_shapes(u.shape, p["r"].shape), bool)
    for k in range(3):
        a = np.pi / 2 + 2 * np.pi * k / 3
        inside &= u * np.cos(a) + v * np.sin(a) <= 0.5 * p["r"]
    return inside


def _ring(u, v, p):
    d2 = u * u + v * v
    return (d2 <= p["r"] ** 2) & (d2 >= (p["inner"] * p["r"]) ** 2)


def _cross(u, v, p):
    arm, r = p["arm"] * p["r"], p["r"]
    return (((np.abs(u) <= arm) & (np.abs(v) <= r)) | ((np.abs(v) <= arm) & (np.abs(u) <= r)))


def _horizontal(u, v, p):
    return _stripes(u, v, p, 0.0, np.deg2rad(15), 0.5)


def _vertical(u, v, p):
    return _stripes(u, v, p, np.pi / 2, np.deg2rad(15), 0.5)


def _checkerboard(u, v, p):
    a, b = _rotate(u, v, np.deg2rad(20) * p["jitter"] - p["angle"])  # image axes +- 20 deg
    cells = np.floor(a / p["period"]) + np.floor(b / p["period"])
    return _window(u, v, p) & (_frac(cells / 2) < 0.25)  # an even cell sum


def _diagonal(u, v, p):
    return _stripes(u, v, p, p["diag_sign"] * np.pi / 4, np.deg2rad(10), 0.3)


def _dots(u, v, p):
    cell = 1.2 * p["period"]
    du, dv = _frac(u / cell) - 0.5, _frac(v / cell) - 0.5  # offsets from the nearest dot, in cells
    return _window(u, v, p) & (du * du + dv * dv <= 0.3 ** 2)


_PATTERNS = (_disk, _square, _triangle, _ring, _cross, _horizontal, _vertical, _checkerboard,
             _diagonal, _dots)
