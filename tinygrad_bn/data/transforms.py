"""Batched image transforms on host NumPy arrays (N, C, H, W), applied before a batch moves to
its device. Each is one vectorised expression over the whole batch (no per-image loop).

A transform is called as t(batch, rng=None). Random transforms draw from `rng` when given (the
DataLoader passes its per-epoch generator, so augmentation is reproducible and resumable) and
otherwise from their own generator, seeded by `seed` (or by tinygrad_bn.manual_seed's seed).
"""
import numpy as np

from tinygrad_bn import backend


def _check_batch(x, name):
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        shape = getattr(x, "shape", None)
        raise ValueError(f"{name}: expected a host NumPy batch of shape (N, C, H, W), got "
                         f"{type(x).__name__} of shape {shape}")


def _own_generator(seed):
    if seed is None:
        seed = backend.initial_seed()
    return np.random.default_rng(seed)


class Compose:
    """Compose([t1, t2, ...]): apply the transforms in order (sharing one rng)."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x, rng=None):
        for t in self.transforms:
            x = t(x, rng=rng)
        return x

    def __repr__(self):
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class Normalize:
    """Normalize(mean, std): x[:, c] <- (x[:, c] - mean[c]) / std[c], per channel."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, np.float32).reshape(-1)
        self.std = np.asarray(std, np.float32).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise ValueError(f"Normalize: mean and std need one value per channel, got "
                             f"{self.mean.size} means and {self.std.size} stds")
        if np.any(self.std == 0):
            raise ValueError(f"Normalize: std evaluated to zero after conversion to float32, "
                             f"leading to division by zero (std={self.std.tolist()})")

    def __call__(self, x, rng=None):
        _check_batch(x, "Normalize")
        if x.shape[1] != self.mean.size and self.mean.size != 1:
            raise ValueError(f"Normalize: batch has {x.shape[1]} channels but mean/std have "
                             f"{self.mean.size} values")
        return ((x - self.mean[:, None, None]) / self.std[:, None, None]).astype(np.float32, copy=False)

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class RandomCrop:
    """RandomCrop(size, padding=None, seed=None): zero-pad each side by `padding` (an int, or
    (left/right, top/bottom) as in torchvision), then cut a size x size window at a random
    offset drawn independently for every image."""

    def __init__(self, size, padding=None, seed=None):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        padding = 0 if padding is None else padding
        self.pad_w, self.pad_h = (padding, padding) if isinstance(padding, int) else tuple(padding)
        if len(self.size) != 2 or min(self.size) <= 0 or min(self.pad_w, self.pad_h) < 0:
            raise ValueError(f"RandomCrop: expected a positive size and non-negative padding, got "
                             f"size={size!r}, padding={padding!r}")
        self.generator = _own_generator(seed)

    def __call__(self, x, rng=None):
        _check_batch(x, "RandomCrop")
        rng = self.generator if rng is None else rng
        n, c, h, w = x.shape
        if self.pad_h or self.pad_w:
            x = np.pad(x, ((0, 0), (0, 0), (self.pad_h, self.pad_h), (self.pad_w, self.pad_w)))
        out_h, out_w = self.size
        room_h, room_w = x.shape[2] - out_h, x.shape[3] - out_w
        if room_h < 0 or room_w < 0:
            raise ValueError(f"RandomCrop: crop size {self.size} is larger than the padded image "
                             f"size {x.shape[2:]} (image {h}x{w}, padding {self.pad_h}/{self.pad_w})")
        top = rng.integers(0, room_h + 1, n)
        left = rng.integers(0, room_w + 1, n)
        # gather every image's window at once: index arrays broadcast to (N, C, out_h, out_w)
        rows = (top[:, None] + np.arange(out_h))[:, None, :, None]
        cols = (left[:, None] + np.arange(out_w))[:, None, None, :]
        return x[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols]

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding=({self.pad_w}, {self.pad_h}))"


class RandomHorizontalFlip:
    """RandomHorizontalFlip(p=0.5, seed=None): mirror each image left-right with probability p,
    independently per image."""

    def __init__(self, p=0.5, seed=None):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = p
        self.generator = _own_generator(seed)

    def __call__(self, x, rng=None):
        _check_batch(x, "RandomHorizontalFlip")
        rng = self.generator if rng is None else rng
        flip = rng.random(x.shape[0]) < self.p
        return np.where(flip[:, None, None, None], x[..., ::-1], x)

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"
