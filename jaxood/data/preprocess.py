"""Small composable preprocessing ops on host (NumPy/PIL); the output feeds CLIP.

Each op maps `(PIL.Image, np.random.Generator) -> PIL.Image` or, last,
`-> float32 HWC array`. `Compose` chains them; `clip_eval(size)` and
`clip_train(size, scale, flip)` build the standard pipelines (224 px for CLIP,
`size=32` for CIFAR, `size=448` for the fine-grained benchmarks). Randomness comes from a generator seeded by the
pipeline per (seed, epoch, example), so augmentation is reproducible and
independent of thread scheduling.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxood.errors import open_files_error, out_of_open_files

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
BICUBIC = Image.BICUBIC


class Undecodable(ValueError):
    """An image file or record that PIL cannot decode."""


def _named(raw) -> str:
    """How an undecodable example's reason names it: its path, or `record` for encoded bytes."""
    return raw if isinstance(raw, str) else "record"


def decode(raw) -> Image.Image:
    """A path, encoded bytes or uint8 array -> RGB PIL image; raises `Undecodable`."""
    if isinstance(raw, np.ndarray):
        return Image.fromarray(raw).convert("RGB")
    try:
        img = Image.open(raw if isinstance(raw, str) else io.BytesIO(raw))
        img.load()
        if img.mode in ("I", "F"):  # 32-bit grey, which convert() clips at 255
            img = _grey32(img)
        if img.mode.startswith("I;16"):  # 16-bit grey (PNG, TIFF): its top byte, as PIL reads 16-bit colour
            img = Image.fromarray((np.asarray(img) >> 8).astype(np.uint8))  # convert() would clip it at 255: white
        return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        if out_of_open_files(err):  # the process's limit, not the image: every image after it would fail too
            raise open_files_error(raw if isinstance(raw, str) else "an image") from err
        # PIL refuses images past twice Image.MAX_IMAGE_PIXELS (179 M pixels); raising that limit decodes them
        raise Undecodable(f"{_named(raw)}: {err}") from err


def load(raw, transform, rng: np.random.Generator | None = None):
    """`transform` of the decoded `raw`; raises `Undecodable`, naming `raw`, when either refuses it."""
    img = decode(raw)
    try:
        return transform(img, rng)
    except Undecodable as err:
        raise Undecodable(f"{_named(raw)}: {err}") from err


def _grey32(img: Image.Image) -> Image.Image:
    """A 32-bit integer ("I") grey image in 0-255 as it is, in 0-65535 as 16-bit grey ("I;16": Pillow 10 opened
    16-bit PNGs so, and they came out white); a float ("F") one, or one outside 0-65535, has no known scale (a
    float image in 0-1 came out black): ValueError, so undecodable, with its range."""
    pixels = np.asarray(img)
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    if img.mode == "I" and 0 <= low and high <= 255:
        return img
    if img.mode == "I" and 0 <= low and high <= 65535:
        return Image.fromarray(pixels.astype(np.uint16))
    kind = "integer" if img.mode == "I" else "float"
    raise ValueError(
        f"32-bit {kind} grey pixels ({low:g} to {high:g}) have no known scale to 8-bit: save the image in 8 or 16 bits"
    )


Op = Callable[[Image.Image, np.random.Generator], object]


@dataclasses.dataclass(frozen=True)
class ResizeShorter:
    """Shorter side to `size`, the longer one to `int(size * long / short)`: rounded down, as torchvision's
    `Resize(size)` (OpenAI CLIP's and the papers' transform) and Hugging Face's `CLIPImageProcessor` do.

    An image so long and thin that the resized one would be past what PIL opens (twice `Image.MAX_IMAGE_PIXELS`,
    179 M pixels; a 1 x 4,000 image at 224) is `Undecodable`, as one PIL refuses to open. A 1 x 10,000 image took
    2 GB and 6 s to resize here, and the cost grows with the length: one long enough could exhaust the host's
    memory."""

    size: int

    def __call__(self, img: Image.Image, rng=None) -> Image.Image:
        w, h = img.size
        long = int(self.size * max(w, h) / min(w, h))
        limit = Image.MAX_IMAGE_PIXELS and 2 * Image.MAX_IMAGE_PIXELS  # None: the user lifted PIL's limit
        if limit and self.size * long > limit:
            shape = (self.size, long) if w <= h else (long, self.size)
            raise Undecodable(
                f"this {w}x{h} image resized to {self.size} on its shorter side would be {shape[0]}x{shape[1]}, "
                f"{self.size * long:,} pixels, past what PIL opens (twice Image.MAX_IMAGE_PIXELS, {limit:,}): crop "
                "it nearer to square"
            )
        return img.resize((self.size, long) if w <= h else (long, self.size), BICUBIC)


@dataclasses.dataclass(frozen=True)
class CenterCrop:
    """torchvision's `CenterCrop`: offsets `round((side - size) / 2)` (Hugging Face's processor rounds them down,
    which differs by one pixel where `side - size` is odd)."""

    size: int

    def __call__(self, img: Image.Image, rng=None) -> Image.Image:
        w, h = img.size
        left, top = int(round((w - self.size) / 2)), int(round((h - self.size) / 2))
        return img.crop((left, top, left + self.size, top + self.size))


@dataclasses.dataclass(frozen=True)
class RandomResizedCrop:
    """torchvision's RandomResizedCrop: area fraction in `scale`, log-uniform aspect `ratio`, 10 tries."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        w, h = img.size
        area = w * h
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                return img.resize((self.size, self.size), BICUBIC, box=(left, top, left + cw, top + ch))
        # Fallback: the largest centred crop within the ratio range.
        in_ratio = w / h
        if in_ratio < self.ratio[0]:
            cw, ch = w, int(round(w / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            cw, ch = int(round(h * self.ratio[1])), h
        else:
            cw, ch = w, h
        left, top = (w - cw) // 2, (h - ch) // 2
        return img.resize((self.size, self.size), BICUBIC, box=(left, top, left + cw, top + ch))


@dataclasses.dataclass(frozen=True)
class RandomFlip:
    p: float = 0.5

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        return img.transpose(Image.FLIP_LEFT_RIGHT) if rng.uniform() < self.p else img


@dataclasses.dataclass(frozen=True)
class Normalize:
    """uint8 RGB -> float32 `(x / 255 - mean) / std`."""

    mean: tuple[float, ...] = tuple(CLIP_MEAN)
    std: tuple[float, ...] = tuple(CLIP_STD)

    def __call__(self, img: Image.Image, rng=None) -> np.ndarray:
        x = np.asarray(img, np.float32) / 255.0
        return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)


@dataclasses.dataclass(frozen=True)
class Compose:
    ops: Sequence[Op]

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> np.ndarray:
        for op in self.ops:
            img = op(img, rng)
        return img

    @property
    def size(self) -> int:
        """Output side length (the last op with a `size`)."""
        return [op.size for op in self.ops if hasattr(op, "size")][-1]


def clip_eval(size: int = 224) -> Compose:
    """CLIP's evaluation transform: shorter side to `size` (bicubic), centre crop, CLIP mean/std."""
    return Compose((ResizeShorter(size), CenterCrop(size), Normalize()))


def clip_train(size: int = 224, scale: tuple[float, float] = (0.08, 1.0), flip: bool = True) -> Compose:
    """RandomResizedCrop(size, scale, bicubic), optional horizontal flip, CLIP mean/std."""
    ops: list[Op] = [RandomResizedCrop(size, tuple(scale))]
    if flip:
        ops.append(RandomFlip())
    return Compose((*ops, Normalize()))
