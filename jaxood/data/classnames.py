"""Class names shipped with jaxood."""

import functools
import os

_ASSETS = os.path.join(os.path.dirname(__file__), "assets")


@functools.cache
def imagenet_classnames() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in label order, CLIP-style (OpenAI's prompt-engineering list).

    Two names repeat in that list ("missile", "sunglasses"), as in the original.
    """
    with open(os.path.join(_ASSETS, "imagenet_classes.txt"), encoding="utf-8") as f:
        names = tuple(line.rstrip("\n") for line in f if line.strip())
    assert len(names) == 1000, len(names)
    return names
