"""The embedded default: the tiny CLIP pretrained on the toy world ships, and its text and images agree."""

import json

import jax
import numpy as np
from conftest import load_config

from jaxood.data.preprocess import CLIP_MEAN, CLIP_STD
from jaxood.data.toy_world import ID_CLASSES, ToyWorld
from jaxood.models import clip
from jaxood.scores.mcm import normalize
from jaxood.text_features import encode_texts
from jaxood.train import train


def test_embedded_toy_clip_loads_as_float32_and_classifies_zero_shot():
    """Zero-shot top-1 with the MCM prompts on 240 toy test images.

    `python -m jaxood.pretrain --config=configs/toy_clip.py` measured 94.0 % on the
    600-image toy test set of its day; with ID classes in typical colours it is 92.8 %
    (93.8 % on these 240; chance 8.3 %).
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
    assert accuracy >= 0.88, accuracy


def test_shortened_demo_sot_glp_beats_zero_shot_on_id_accuracy(tmp_path):
    """The demo's training, evaluated on 240 ID, 80 near, 120 far and 160 spurious images.

    Measured over `seed` 0-4 on the embedded CLIP: SOT-GLP ID accuracy 94.6-95.4 % vs
    zero-shot 93.8 % (+2 to +4 images of 240); the assertion asks for at least one
    image more. Near AUROC (GL-MCM) 78.2-80.1 vs zero-shot 80.4 (GL-MCM's own local
    features; 81.1 with the V-V stream's): SOT-GLP does not beat zero-shot on near OOD
    with this tiny CLIP (its local term is at chance there, see docs/toy_demo.md), so the
    bound below only fails when training breaks image-text agreement.
    """
    c = load_config("sot_glp", "demo", **{"id_dataset.per_class": 20, "progress_every": 1e9})
    for ood in c.ood_datasets.values():
        ood.per_class = 10
    train(c, str(tmp_path))
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    accuracy, ood = results["id_accuracy"], results["ood"]
    assert accuracy["SOT-GLP"] >= accuracy["zero-shot"] + 1 / 240 - 1e-9, accuracy
    assert ood["SOT-GLP / GL-MCM"]["near"]["auroc"] >= ood["zero-shot / GL-MCM"]["near"]["auroc"] - 0.05, ood
    assert ood["SOT-GLP / GL-MCM"]["far"]["auroc"] >= 0.9, ood
