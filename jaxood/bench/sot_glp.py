"""Benchmark the SOT-GLP train step at ImageNet scale on the text side.

    python -m jaxood.bench.sot_glp [--classes 1000] [--batch 4] [--no_full_length] [--step_only] [--model NAME]

    python -m jaxood.bench.sot_glp --memory [--remat] [--prompt_chunk N]   # ImageNet's 1000 classes: sizes only

    python -m jaxood.bench.sot_glp --dtype float16 --loss_scale dynamic   # the released code's precision

Random ViT-B/16 weights (or the CLIP `--model` names, as `config.model` does:
the one a run will train, such as openai/clip-vit-base-patch16 or a larger
one), C classes (ImageNet names), G = P = 4, K = 10, a small image batch. Times
one jitted train step (forward + backward + SGD update) with the prompt batch
cut at its longest EOT (jaxood's default) and at the full 77 tokens, and where
the time goes: the C (G + P) prompts through the text tower with gradients, the
image tower (both streams, gradient to the local projection), and the top-K +
Sinkhorn local score. Each step's compile time and memory per device (XLA's buffer
sizes, `jaxood.memory.step_bytes`) are printed as it compiles; `--memory` stops there,
so sizes too large to run are still measured.
The settings are the paper config's, from the checkout's `configs/sot_glp.py`
(`--config` names that file where jaxood was installed from a copy).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from jaxood import loss_scale
from jaxood.bench import VIT_B16, count, run
from jaxood.data.classnames import imagenet_classnames
from jaxood.data.pipeline import data_mesh
from jaxood.errors import UserError
from jaxood.memory import GiB, step_bytes
from jaxood.methods import sot_glp
from jaxood.models import clip
from jaxood.scores.mcm import normalize


def _time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


# The checkout's config, beside the package (an editable install); `--config` names it for any other install.
CHECKOUT_CONFIG = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "sot_glp.py"))


def _config(args):
    spec = importlib.util.spec_from_file_location("sot_glp_config", args.config)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    config = mod.get_config("paper")
    if args.prompt_chunk is not None:
        config.sot_glp.prompt_chunk = args.prompt_chunk
    return config


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(
        prog="python -m jaxood.bench.sot_glp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--classes", type=count(1, len(imagenet_classnames())), default=1000, help="ImageNet's first C")
    ap.add_argument("--batch", type=count(), default=4)
    ap.add_argument("--repeats", type=count(), default=1)
    ap.add_argument("--no_full_length", action="store_true", help="skip the (slow) 77-token step")
    ap.add_argument("--dtype", default="float32", choices=clip.COMPUTE_DTYPES)
    ap.add_argument("--remat", action="store_true", help="rematerialise each block (config.remat)")
    ap.add_argument("--loss_scale", default="none", choices=loss_scale.CHOICES, help="config.loss_scale")
    ap.add_argument(
        "--prompt_chunk",
        type=count(0),
        default=None,
        help="prompts through the text tower at once (0: all; default: config's)",
    )
    ap.add_argument("--memory", action="store_true", help="compile and print the memory only; time nothing")
    ap.add_argument("--step_only", action="store_true", help="time the step, not where its time goes")
    ap.add_argument("--config", default=CHECKOUT_CONFIG, help="configs/sot_glp.py of a jaxood checkout")
    ap.add_argument(
        "--model",
        default=None,
        help="the CLIP to time, as config.model names it (a hub id, a Hugging Face or jaxood folder, `toy`); "
        "default: random ViT-B/16 weights",
    )
    args = ap.parse_args(argv)
    if not os.path.isfile(args.config):  # a package installed from a copy has no configs/ beside it
        ap.error(
            f"--config: no config file {args.config}: the configs ship in the jaxood checkout's configs/; give "
            "--config=CHECKOUT/configs/sot_glp.py"
        )

    if args.model:
        try:
            loaded, params = clip.load(args.model)
        except UserError as err:  # no such model, no network for a hub id, not a CLIP
            ap.error(f"--model: {err}")
        cfg, weights = loaded.cfg, args.model
    else:
        cfg, weights = clip.CLIPConfig.from_hf(VIT_B16), "ViT-B/16 random weights"
        params = jax.device_get(clip.init_params(clip.CLIP(cfg)))
    dtype = clip.compute_dtype(args.dtype)
    model = clip.CLIP(cfg, dtype=dtype, remat=args.remat)
    names = list(imagenet_classnames())[: args.classes]
    prompts = sot_glp.Prompts(names, 4)  # the method's own prompt builder: name tokens cut at the longest EOT
    config = _config(args)
    mesh = data_mesh()
    rng = np.random.RandomState(0)
    batch = {
        "image": jnp.asarray(rng.randn(args.batch, cfg.image_size, cfg.image_size, 3), jnp.float32),
        "label": jnp.asarray(rng.randint(0, args.classes, args.batch)),
        "mask": jnp.ones((args.batch,), bool),
    }
    print(
        f"SOT-GLP step: C={args.classes}, G=P=4 -> {args.classes * 8} prompts, image batch {args.batch}, "
        f"{weights}, {jax.device_count()} {jax.devices()[0].platform} device(s), {jnp.dtype(dtype).name}"
        + (", remat" if args.remat else "")
        + (f", matmul precision {p}" if (p := jax.config.jax_default_matmul_precision) else "")
        + (f", loss scale {args.loss_scale}" if args.loss_scale != "none" else "")
        + (f", text tower on at most {chunk} prompts at once" if (chunk := config.sot_glp.prompt_chunk) else "")
    )

    def step_time(full_length: bool) -> dict:
        """The step's `step_`, `length_`, `bytes_` and `compile_` figures, each key ending in `full` or `truncated`."""
        from jaxood import train as trainer

        patch = mock.patch.object(clip, "eot_length", lambda *a, **k: 77) if full_length else contextlib.nullcontext()
        with patch:
            method = sot_glp.build(config, model, params, names, mesh)
        length = 77 if full_length else prompts.ids.shape[1]
        trainable, frozen, labels = trainer.partition(method.params, sot_glp.trainable_rules(config))
        tx = trainer.make_optimizer(config, labels, 100, 5000)
        state = trainer.initial_state(trainable, tx, {}, args.loss_scale)
        print(f"  {length} tokens: compiling", flush=True)  # minutes at scale: say what the wait is for
        t = time.perf_counter()
        step = jax.jit(trainer.make_step(method, tx, 0), donate_argnums=(0,)).lower(state, frozen, batch).compile()
        compiled_in = time.perf_counter() - t
        size = step_bytes(step)
        print(f"  {length} tokens: compiled in {compiled_in:.1f} s, {size / GiB:.2f} GiB per device", flush=True)
        seconds = float("nan")  # --memory: compiled, not timed
        if not args.memory:  # the state is donated to each call, as in training: every call gets a fresh copy
            seconds = _time(lambda: step(jax.tree.map(jnp.copy, state), frozen, batch)[1]["loss"], args.repeats)
        figures = {"step": seconds, "length": length, "bytes": size, "compile": compiled_in}
        return {f"{k}_{'full' if full_length else 'truncated'}": v for k, v in figures.items()}

    r = step_time(False)
    if not args.no_full_length:
        r.update(step_time(True))
    if args.memory:
        return r
    print(f"train step, prompts cut at the EOT ({r['length_truncated']} tokens): {r['step_truncated']:.3g} s")
    if not args.no_full_length:
        print(
            f"train step, full 77 tokens: {r['step_full']:.3g} s ({r['step_full'] / r['step_truncated']:.1f}x slower)"
        )
    if args.step_only:
        return r

    # Where the time goes (each part jitted on its own, forward + backward where the step has one).
    method = sot_glp.build(config, model, params, names, mesh)
    p = jax.tree.map(jnp.asarray, method.params)
    n_prompts = args.classes * 8
    class_index = np.tile(np.arange(args.classes), 8)
    ctx = jnp.asarray(rng.randn(n_prompts, 4, cfg.text.width) * 0.02, jnp.float32)
    eot = jnp.asarray(prompts.eot[class_index])

    # Weights and inputs are arguments, not closed-over constants (XLA would constant-fold them).
    def text_loss(ctx, clip_params, name_embeddings, eot):
        tokens = prompts.token_embeddings(ctx, name_embeddings, class_index)
        return jnp.sum(model.apply({"params": clip_params}, tokens, eot, method="encode_text_embeddings") ** 2)

    text_grad = jax.jit(jax.grad(text_loss))
    r["text"] = _time(lambda: text_grad(ctx, p["clip"], p["name_embeddings"], eot), args.repeats)

    def image_loss(proj, clip_params, images):
        g, local = model.apply({"params": clip_params}, images, proj, method="encode_image_dense")
        return jnp.sum(local**2) + jnp.sum(g**2)

    image_grad = jax.jit(jax.grad(image_loss))
    r["image"] = _time(lambda: image_grad(p["local_proj"], p["clip"], batch["image"]), args.repeats)
    local = normalize(jnp.asarray(rng.randn(args.batch, cfg.num_patches, cfg.projection_dim), jnp.float32))
    text = normalize(jnp.asarray(rng.randn(args.classes, 4, cfg.projection_dim), jnp.float32))
    ot_grad = jax.jit(jax.grad(lambda t, loc: jnp.sum(sot_glp.local_score(loc, t))))
    r["ot"] = _time(lambda: ot_grad(text, local), args.repeats)
    total = r["text"] + r["image"] + r["ot"]
    for k, label in (
        ("text", f"text tower, {n_prompts} prompts fwd+bwd"),
        ("image", "image tower, both streams"),
        ("ot", f"top-K + Sinkhorn, {args.batch * args.classes} problems"),
    ):
        print(f"  {label}: {r[k]:.3g} s ({100 * r[k] / total:.0f}%)")
    return r


if __name__ == "__main__":
    run(main)
