"""The embedded default: the tiny CLIP pretrained on the toy world ships, and its text and images agree."""

import jax
import numpy as np

from jaxood.data.preprocess import CLIP_MEAN, CLIP_STD
from jaxood.data.toy_world import ID_CLASSES, ToyWorld
from jaxood.models import clip
from jaxood.scores.mcm import normalize
from jaxood.text_features import encode_texts


def test_embedded_toy_clip_loads_as_float32_and_classifies_zero_shot():
    """Zero-shot top-1 with the MCM prompts on 240 toy test images.

    `python -m jaxood.pretrain --config=configs/toy_clip.py` measured 88.2 % on the
    600-image toy test set (chance 8.3 %); 0.75 leaves room for the smaller sample.
    """
    model, params = clip.load("toy")
    assert model.cfg.image_size == 64 and model.cfg.vision.width == 128
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(params))
    test = ToyWorld("test", per_class=20, size=64, seed=1)
    images, labels = zip(*(test.read(i) for i in range(len(test))))
    images, labels = np.stack(images).astype(np.float32) / 255, np.array(labels)
    v = {"params": params}
    img = normalize(model.apply(v, (images - CLIP_MEAN) / CLIP_STD, method="encode_image"))
    txt = normalize(encode_texts(model, params, [f"a photo of a {c}." for c in ID_CLASSES]))
    accuracy = float(np.mean(np.argmax(np.asarray(img @ txt.T), -1) == labels))
    assert accuracy >= 0.75, accuracy
