"""Contrastive CLIP pretraining (symmetric InfoNCE over image-caption pairs) with the shared trainer.

Used to pretrain jaxood's embedded tiny CLIP on the toy world
(`configs/toy_clip.py`). Every CLIP parameter trains, `logit_scale` included
(clamped at log 100 as in CLIP). Batches need `text` (captions): the loader's
`caption_length`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxood.evaluate import Scorer
from jaxood.methods import Method, masked_accuracy, masked_mean
from jaxood.scores.mcm import normalize

SCORE_ROWS = ()  # none of its own: evaluation shows the zero-shot rows of the trained CLIP (config.scores)


def contrastive_loss(img: jax.Array, txt: jax.Array, logit_scale: jax.Array, mask: jax.Array):
    """Mean of image->text and text->image cross-entropy on normalised features; masked pairs excluded."""
    logits = jnp.exp(jnp.minimum(logit_scale, math.log(100.0))) * img @ txt.T
    logits = jnp.where(mask[None, :] & mask[:, None] | jnp.eye(len(mask), dtype=bool), logits, -1e9)
    target = jnp.arange(len(mask))

    def ce(z):
        return masked_mean(-jax.nn.log_softmax(z, -1)[target, target], mask)

    acc = masked_accuracy(logits, target, mask)
    return (ce(logits) + ce(logits.T)) / 2, acc


def trainable_rules(config) -> tuple[tuple[str, str], ...]:
    """Every CLIP parameter trains, in optimiser group "clip"."""
    del config
    return ((r"^clip/", "clip"),)


def build(config, model, clip_params, class_names, mesh) -> Method:
    del class_names, mesh

    def loss(params, state, batch, rng):
        p = {"params": params["clip"]}
        img = normalize(model.apply(p, batch["image"], method="encode_image"))
        txt = normalize(model.apply(p, batch["text"], method="encode_text"))
        value, acc = contrastive_loss(img, txt, params["clip"]["logit_scale"], batch["mask"])
        return value, ({"loss": value, "pair_acc": acc, "logit_scale": jnp.exp(params["clip"]["logit_scale"])}, state)

    def scorer(params) -> Scorer:
        return Scorer(lambda args, images: {}, (), SCORE_ROWS)

    return Method(params={"clip": clip_params}, loss=loss, scorer=scorer)
