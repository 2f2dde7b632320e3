"""The toy world: jaxood's embedded, procedurally rendered OOD benchmark.

Coloured shapes (the object classes, upright within 20 degrees) on textured
backgrounds, rendered on the fly and deterministic in (seed, split, index); no
download. The splits mirror the papers' benchmarks:

- `train` / `test`: the 12 ID object classes. In `train` each class sits on its
  own background (`SPURIOUS_BACKGROUND`) with probability `spurious_p`, a
  Waterbirds-style shortcut; `test` draws backgrounds uniformly. In both, 70 %
  of a class's objects have the class's own colour (`TYPICAL_COLOUR`, as hearts
  are mostly red): a statistic of this dataset that pretraining (uniform
  colours) did not teach, so zero-shot prompts cannot know it and few-shot
  learning can. Every other split draws object colours uniformly.
- `near_ood`: 8 held-out objects that resemble ID ones (ellipse ~ circle,
  octagon ~ hexagon, rectangle ~ square, ...), on ID backgrounds.
- `far_ood`: textures never used in ID data (noise, checks, waves), no object.
- `spurious_ood`: the ID backgrounds (with the training palette), no object.
- `fine_grained_train` / `fine_grained_test` / `fine_grained_ood`: regular
  polygons and stars told apart by their number of sides or points; ID classes
  are `np.random.RandomState(0).choice(13, 9, replace=False)` as in methods.md §4.
- `pretrain`: every object class (ID and OOD alike, as web-scale CLIP knows
  both) and the plain textures, with captions, for contrastive pretraining.

Every example has a caption such as "a photo of a red hexagon on a striped
background" and records the (object, colour) it shows (`Example.objects`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

from jaxood import settings
from jaxood.errors import InvalidInput, not_one_of

ID_CLASSES = (
    "circle", "triangle", "square", "pentagon", "hexagon", "star",
    "cross", "heart", "crescent", "ring", "arrow", "diamond",
)  # fmt: skip
NEAR_OOD_CLASSES = ("ellipse", "octagon", "rectangle", "trapezoid", "hexagram", "semicircle", "kite", "parallelogram")
FINE_GRAINED_CLASSES = (
    "triangle", "square", "pentagon", "hexagon", "heptagon", "octagon", "nonagon", "decagon",
    "four-pointed star", "five-pointed star", "six-pointed star", "seven-pointed star", "eight-pointed star",
)  # fmt: skip
FINE_GRAINED_N_ID = 9
ID_BACKGROUNDS = ("plain", "gradient", "striped", "dotted")
FAR_BACKGROUNDS = ("noisy", "checkered", "wavy")
BACKGROUND_WORDS = {
    "plain": "a plain background", "gradient": "a gradient background", "striped": "a striped background",
    "dotted": "a dotted background", "noisy": "a noisy texture", "checkered": "a checkered texture",
    "wavy": "a wavy texture",
}  # fmt: skip
COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 220, 40),
    "orange": (245, 140, 20), "purple": (140, 50, 180), "pink": (245, 130, 190), "white": (245, 245, 245),
    "black": (20, 20, 20), "brown": (130, 80, 40), "cyan": (40, 210, 220),
}  # fmt: skip
# Backgrounds blend two colours muted toward mid-gray, so no object colour may be gray itself: a gray object
# vanished into every background (zero-shot top-1 58 % on gray objects vs 88 % overall).
MUTE = 0.65
# The colour a `train` / `test` object of each ID class has with probability TYPICAL_COLOUR_P (module docstring).
TYPICAL_COLOUR = {
    "circle": "orange", "triangle": "green", "square": "blue", "pentagon": "purple", "hexagon": "yellow",
    "star": "cyan", "cross": "white", "heart": "red", "crescent": "pink", "ring": "black", "arrow": "red",
    "diamond": "green",
}  # fmt: skip
TYPICAL_COLOUR_P = 0.7
# The background each ID class prefers in `train` (the spurious shortcut).
SPURIOUS_BACKGROUND = {c: ID_BACKGROUNDS[i % len(ID_BACKGROUNDS)] for i, c in enumerate(ID_CLASSES)}
SPLITS = (
    "train", "test", "near_ood", "far_ood", "spurious_ood",
    "fine_grained_train", "fine_grained_test", "fine_grained_ood", "pretrain",
)  # fmt: skip
# Objects stand upright up to this tilt (radians), as objects in photos mostly do.
MAX_TILT = math.pi / 9
ALL_OBJECTS = tuple(dict.fromkeys(ID_CLASSES + NEAR_OOD_CLASSES + FINE_GRAINED_CLASSES))


def fine_grained_id_classes() -> tuple[str, ...]:
    """ID classes of the fine-grained split, chosen as methods.md §4 chooses them."""
    ids = np.random.RandomState(0).choice(len(FINE_GRAINED_CLASSES), FINE_GRAINED_N_ID, replace=False)
    return tuple(FINE_GRAINED_CLASSES[i] for i in sorted(ids))


# ------------------------------------------------------------------- geometry


def _regular(n: int, r: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
    a = phase + 2 * math.pi * np.arange(n) / n
    return np.stack([r * np.cos(a), r * np.sin(a)], -1)


def _star(points: int, inner: float = 0.45) -> np.ndarray:
    a = -math.pi / 2 + math.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], -1)


def _ellipse(rx: float, ry: float, dx: float = 0.0, n: int = 48) -> np.ndarray:
    a = 2 * math.pi * np.arange(n) / n
    return np.stack([dx + rx * np.cos(a), ry * np.sin(a)], -1)


def _heart(n: int = 48) -> np.ndarray:
    t = 2 * math.pi * np.arange(n) / n
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y + 2], -1) / 17


_POINTS = {
    3: "triangle", 4: "square", 5: "pentagon", 6: "hexagon", 7: "heptagon", 8: "octagon", 9: "nonagon", 10: "decagon",
}  # fmt: skip
_CROSS = np.array([
    [-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3], [0.3, 1], [-0.3, 1], [-0.3, 0.3], [-1, 0.3],
    [-1, -0.3], [-0.3, -0.3],
])  # fmt: skip
_STARS = {"four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}


def shape_polygons(name: str) -> list[tuple[np.ndarray, int]]:
    """Polygons of a shape in unit coordinates as (vertices, fill): fill 0 cuts a hole."""
    for n, poly in _POINTS.items():
        if name == poly:
            return [(_regular(n, phase=-math.pi / 2 + (math.pi / 4 if n == 4 else 0)), 1)]
    if name.endswith("-pointed star"):
        return [(_star(_STARS[name.split("-")[0]]), 1)]
    table = {
        "circle": [(_ellipse(1, 1), 1)],
        "ellipse": [(_ellipse(1, 0.55), 1)],
        "star": [(_star(5), 1)],
        "hexagram": [(_star(6, 0.58), 1)],
        "cross": [(_CROSS, 1)],
        "heart": [(_heart(), 1)],
        "crescent": [(_ellipse(1, 1), 1), (_ellipse(0.85, 0.85, dx=0.45), 0)],
        "ring": [(_ellipse(1, 1), 1), (_ellipse(0.55, 0.55), 0)],
        "arrow": [(np.array([[-1, -0.25], [0.2, -0.25], [0.2, -0.6], [1, 0], [0.2, 0.6], [0.2, 0.25], [-1, 0.25]]), 1)],
        "diamond": [(np.array([[0, -1], [0.6, 0], [0, 1], [-0.6, 0]]), 1)],
        "rectangle": [(np.array([[-1, -0.5], [1, -0.5], [1, 0.5], [-1, 0.5]]), 1)],
        "trapezoid": [(np.array([[-1, 0.6], [1, 0.6], [0.5, -0.6], [-0.5, -0.6]]), 1)],
        "semicircle": [(np.concatenate([_ellipse(1, 1, n=48)[24:], [[1, 0]]]) + [0, 0.4], 1)],
        "kite": [(np.array([[0, -1], [0.55, -0.35], [0, 1], [-0.55, -0.35]]), 1)],
        "parallelogram": [(np.array([[-1, 0.5], [0.45, 0.5], [1, -0.5], [-0.45, -0.5]]), 1)],
    }
    if name not in table:
        raise KeyError(f"unknown toy object {name!r}")
    return table[name]


# ---------------------------------------------------------------- backgrounds


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return x, y


def _mix(a, b, t: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float32) * (1 - t[..., None]) + np.asarray(b, np.float32) * t[..., None]


def render_background(kind: str, size: int, rng: np.random.Generator, palette: tuple) -> np.ndarray:
    """A float32 (size, size, 3) background in [0, 255]."""
    c1, c2 = palette
    x, y = _grid(size)
    angle = rng.uniform(0, math.pi)
    u = x * math.cos(angle) + y * math.sin(angle)
    if kind == "plain":
        t = np.zeros_like(x)
    elif kind == "gradient":
        t = (u - u.min()) / (u.max() - u.min() + 1e-6)
    elif kind == "striped":
        t = (np.sin(u * 2 * math.pi * rng.uniform(4, 8)) > 0).astype(np.float32)
    elif kind == "dotted":
        period = rng.uniform(0.12, 0.2)
        dx, dy = (x / period) % 1 - 0.5, (y / period) % 1 - 0.5
        t = (dx**2 + dy**2 < 0.09).astype(np.float32)
    elif kind == "noisy":
        coarse = rng.uniform(0, 1, (size // 4 + 1, size // 4 + 1)).astype(np.float32)
        t = np.kron(coarse, np.ones((4, 4), np.float32))[:size, :size] * 0.6 + rng.uniform(0, 0.4, (size, size))
    elif kind == "checkered":
        k = rng.integers(4, 9)
        t = ((np.floor(x * k) + np.floor(y * k)) % 2).astype(np.float32)
    elif kind == "wavy":
        f = rng.uniform(3, 6)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * (f * u + 0.15 * np.sin(2 * math.pi * f * (y - x))))
    else:
        raise KeyError(f"unknown background {kind!r}")
    return _mix(c1, c2, t) + rng.normal(0, 4, (size, size, 1)).astype(np.float32)


# ------------------------------------------------------------------ examples


@dataclasses.dataclass(frozen=True)
class Example:
    image: np.ndarray  # uint8 (S, S, 3)
    label: int  # class index in the split's class list; -1 for OOD
    caption: str
    objects: tuple[tuple[str, str], ...] = ()  # the (name, colour) of each object drawn


def _object_mask(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A float mask (size, size) of the shape at a random scale, position and rotation."""
    scale = 2  # supersample for smooth edges
    big = size * scale
    radius = rng.uniform(0.22, 0.36) * big
    centre = rng.uniform(radius * 1.05, big - radius * 1.05, 2)
    theta = rng.uniform(-MAX_TILT, MAX_TILT)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    for vertices, fill in shape_polygons(name):
        pts = vertices @ rot.T * radius + centre
        draw.polygon([tuple(p) for p in pts], fill=255 * fill)
    return np.asarray(mask.resize((size, size), Image.BILINEAR), np.float32) / 255


def muted(colour: str) -> tuple[float, ...]:
    """A background tone: `colour` pulled toward mid-gray, so objects stand out."""
    return tuple((1 - MUTE) * v + MUTE * 128 for v in COLOURS[colour])


def _palette(rng: np.random.Generator, avoid: str | None = None) -> tuple[tuple, tuple]:
    names = [c for c in COLOURS if c != avoid]  # never the object's colour
    a, b = rng.choice(len(names), 2, replace=False)
    return muted(names[a]), muted(names[b])


def render(obj: str | None, background: str, size: int, rng: np.random.Generator, colour: str | None = None) -> Example:
    """Render one image: `obj` (None for none) of `colour` (random when None) on `background`."""
    if obj and colour is None:
        colour = str(rng.choice(list(COLOURS)))
    img = render_background(background, size, rng, _palette(rng, avoid=colour))
    if obj:
        m = _object_mask(obj, size, rng)[..., None]
        img = img * (1 - m) + np.asarray(COLOURS[colour], np.float32) * m
        article = "an" if colour[0] in "aeiou" else "a"
        caption = f"a photo of {article} {colour} {obj} on {BACKGROUND_WORDS[background]}"
    else:
        caption = f"a photo of {BACKGROUND_WORDS[background]}"
    return Example(np.clip(img, 0, 255).astype(np.uint8), -1, caption, ((obj, colour),) if obj else ())


class ToyWorld:
    """One split of the toy world as a random-access source.

    `ToyWorld("train", per_class=16)` has 16 images per ID class. OOD splits
    have `per_class` images per OOD class (near), or `per_class * 4` per
    texture (far, spurious). Items are rendered on demand, identically for a
    given (seed, split, index) on every host, and kept in memory: epochs after
    the first cost no rendering (12 KiB an image at 64 px).
    """

    def __init__(self, split: str, per_class: int = 50, size: int = 64, seed: int = 0, spurious_p: float = 0.8):
        if split not in SPLITS:
            raise InvalidInput(not_one_of("toy world split", split, SPLITS))
        given = {"per_class": per_class, "size": size, "seed": seed, "spurious_p": spurious_p}
        try:  # out of range they failed in NumPy or PIL while rendering, or (spurious_p) ran as 0 or 1, silently
            settings.whole(given, "per_class", 1)
            settings.whole(given, "size", 1)
            settings.whole(given, "seed", 0, 2**32 - 1)
            settings.number(given, "spurious_p", least=0, most=1)  # a probability
        except InvalidInput as err:
            raise InvalidInput(f"toy world split {split!r}: {err}") from None
        self.split, self.size, self.seed, self.spurious_p = split, size, seed, spurious_p
        self.identity = ("toy", split, per_class, size, seed, spurious_p)
        fg_id = fine_grained_id_classes()
        self.class_names: tuple[str, ...]
        self._objects: tuple[str | None, ...]
        if split in ("train", "test"):
            self.class_names = ID_CLASSES
            self._objects, self._backgrounds = ID_CLASSES, ID_BACKGROUNDS
        elif split == "near_ood":
            self.class_names, self._objects, self._backgrounds = (), NEAR_OOD_CLASSES, ID_BACKGROUNDS
        elif split == "far_ood":
            self.class_names, self._objects, self._backgrounds = (), (None,), FAR_BACKGROUNDS
        elif split == "spurious_ood":
            self.class_names, self._objects, self._backgrounds = (), (None,), ID_BACKGROUNDS
        elif split in ("fine_grained_train", "fine_grained_test"):
            self.class_names, self._objects, self._backgrounds = fg_id, fg_id, ID_BACKGROUNDS
        elif split == "fine_grained_ood":
            ood = tuple(c for c in FINE_GRAINED_CLASSES if c not in fg_id)
            self.class_names, self._objects, self._backgrounds = (), ood, ID_BACKGROUNDS
        else:  # pretrain: every object, and the bare textures
            self.class_names = ALL_OBJECTS
            self._objects, self._backgrounds = ALL_OBJECTS + (None,), ID_BACKGROUNDS + FAR_BACKGROUNDS
        per_group = per_class * 4 if self._objects == (None,) else per_class
        self._length = per_group * (len(self._backgrounds) if self._objects == (None,) else len(self._objects))
        self._per_group = per_group
        self._split_id = SPLITS.index(split)
        self._rendered: dict[int, Example] = {}

    def __len__(self) -> int:
        return self._length

    def fingerprint(self) -> bytes:  # rendered from its settings alone
        return repr(self.identity).encode()

    def _spec(self, index: int, rng: np.random.Generator) -> tuple[str | None, str, int]:
        group = index // self._per_group
        if self._objects == (None,):
            return None, self._backgrounds[group], -1
        obj = self._objects[group % len(self._objects)]
        label = self.class_names.index(obj) if obj in self.class_names else -1
        if self.split == "pretrain" and rng.uniform() < 1 / 8:
            return None, str(rng.choice(self._backgrounds)), -1
        if self.split == "train" and rng.uniform() < self.spurious_p:
            return obj, SPURIOUS_BACKGROUND[obj], label
        return obj, str(rng.choice(self._backgrounds)), label

    def labels(self) -> np.ndarray:
        """All labels without rendering (the object's class index, -1 for none/OOD)."""
        return np.array([self._spec(i, self._rng(i))[2] for i in range(len(self))], np.int32)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self._split_id, index])

    def example(self, index: int) -> Example:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for toy world {self.split!r} of {len(self)}")
        if index not in self._rendered:
            self._rendered[index] = self._render(index)
        return self._rendered[index]

    def _render(self, index: int) -> Example:
        rng = self._rng(index)
        obj, background, label = self._spec(index, rng)
        typical = self.split in ("train", "test") and rng.uniform() < TYPICAL_COLOUR_P
        ex = render(obj, background, self.size, rng, colour=TYPICAL_COLOUR[obj] if typical else None)
        caption = ex.caption
        detail = rng.uniform() if self.split == "pretrain" and obj else 1.0
        if detail < 0.75:
            # Web captions vary in detail: half name only the object, a quarter the object and its colour.
            ((name, colour),) = ex.objects
            article = "an" if colour[0] in "aeiou" else "a"
            # Name-only captions keep "a" before vowels too ("a photo of a arrow."): the shipped CLIP learned them so.
            caption = f"a photo of a {name}." if detail < 0.5 else f"a photo of {article} {colour} {name}."
        return dataclasses.replace(ex, label=label, caption=caption)

    def caption(self, index: int) -> str:
        return self.example(index).caption

    def read_captioned(self, index: int) -> tuple[np.ndarray, int, str]:
        """Image, label and caption from one rendering."""
        ex = self.example(index)
        return ex.image, ex.label, ex.caption

    def read(self, index: int) -> tuple[np.ndarray, int]:
        ex = self.example(index)
        return ex.image, ex.label
