"""SOT-GLP: global + class-specific local prompts on a frozen CLIP, local patches matched by sparse OT.

methods.md §1. Learned: G global prompts (M context vectors each, initialised
from "a photo of a"), P local prompts per class (Xavier-uniform, near zero),
and the local projection W (identity init; frozen for `noproj`). With
`class_specific_locals` False (the paper's ablation "w/o class-specific locals")
the P local contexts are one pool that every class shares, each still followed by
the class's name, as the global prompts are.

- Global logit `s_g[b,c] = mean_m cos(z_b, T_g[c,m]) / tau`; in training each
  image uses `max(G - int(0.75 G), 1)` random prompts (prompt dropout).
- Local score `phi[b,c]` (`local_score`): V-V patch features (`local_stream`
  "tokens": CLIP's own last-block patch tokens, the paper's ablation without
  V-V, its Tables 2 and 3) vs the class's local prompts, top-K patches by mean
  similarity, balanced entropic OT (stop-gradient plan), `sum T * sim`
  (`reference`: divided by P).
- Loss `CE(s_g) + lambda CE(phi / tau)`; prediction `s_g + lambda phi / tau`
  (`reference`: `mean_G cos + phi`); OOD score GL-MCM of the global prompts and
  the local patch features at temperature T. Its two terms are reported too,
  as rows "MCM" (global prompts) and "L-MCM" (local prompts), to show which
  part detects what, and "MaxLogit" of the prediction (methods.md §0's post-hoc
  score, next to the zero-shot CLIP's MaxLogit row).

Every step encodes the C * (G + P) prompts through the text tower with
gradients; that batch is sharded over the mesh's data axis and cut at its
longest EOT. `prompt_chunk` > 0 encodes each device's share in chunks of that
many prompts, one after another under `jax.checkpoint`: the text tower's
activations then take memory for one chunk, for one more forward pass.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxood import ot, settings
from jaxood.data.pipeline import split_rows
from jaxood.errors import InvalidInput, not_one_of
from jaxood.evaluate import Scorer
from jaxood.methods import Method, masked_accuracy, masked_mean
from jaxood.models import clip
from jaxood.models.tokenizer import CONTEXT_LENGTH, get_tokenizer, tokenize
from jaxood.scores.logits import max_logit, predicted_class
from jaxood.scores.mcm import mcm, normalize

NAME = "SOT-GLP"
# A resumed run may change these (jaxood.train): settings only the scorer reads, and how the prompts are batched.
RESUME_MAY_CHANGE = ("sot_glp.ood_temperature", "sot_glp.prediction", "sot_glp.prompt_chunk")
# Keys added since runs were saved, with the value that trains as those runs did (jaxood.train.check_resume).
ADDED_KEYS = {"sot_glp.local_stream": "vv", "sot_glp.class_specific_locals": True, "shot_sampling": "per_class"}
PREDICTIONS = ("paper", "reference")  # s_g + lambda phi / tau, or the released softmax(100 (mean_G cos + phi) / 2)
LOCAL_REDUCTIONS = ("sum", "mean")  # phi = sum T sim (paper), or that / P (released code)
LOCAL_STREAMS = ("vv", "tokens")  # the local patch features: the V-V stream, or CLIP's patch tokens (w/o V-V)
# The training log's largest marginal error of a step's plans (jaxood.ot.marginal_error), over its real images.
OT_ERROR = "ot_marginal_error"
SCORE_PARTS = ("GL-MCM", "MCM", "L-MCM", "MaxLogit")  # the OOD score, its global and local terms, the prediction's
SCORE_ROWS = tuple(f"{NAME} / {part}" for part in SCORE_PARTS)  # its scorer's rows, in table order


def patch_prompt_similarity(local: jax.Array, local_text: jax.Array) -> jax.Array:
    """`sim[b, c, n, p] = cos(patch n of image b, local prompt p of class c)` for normalised inputs."""
    return jnp.einsum("bnd,cpd->bcnp", local, local_text)


def sparse_transport(
    sim: jax.Array, top_k: int = 10, epsilon: float = 0.1, iterations: int = 100
) -> tuple[jax.Array, jax.Array]:
    """`(plan, support)`, both `(B, C, K, P)`: each (image, class)'s top-K patches' similarities to its prompts and
    their balanced plan; see `local_score`."""
    saliency = jax.lax.stop_gradient(sim.mean(-1))  # (B, C, N)
    _, idx = jax.lax.top_k(saliency, top_k)  # (B, C, K)
    support = jnp.take_along_axis(sim, idx[..., None], axis=2)  # (B, C, K, P)
    return ot.sinkhorn_plan(1.0 - support, epsilon, iterations, grad="stop"), support


def transported_similarity(plan: jax.Array, support: jax.Array, reduction: str = "sum") -> jax.Array:
    """`phi (B, C)` from `sparse_transport`'s plan and support; see `local_score`."""
    if reduction not in LOCAL_REDUCTIONS:
        raise ValueError(not_one_of("reduction", reduction, LOCAL_REDUCTIONS))
    phi = jnp.sum(plan * support, axis=(-2, -1))
    return phi / support.shape[-1] if reduction == "mean" else phi


def local_score(
    local: jax.Array,
    local_text: jax.Array,
    top_k: int = 10,
    epsilon: float = 0.1,
    iterations: int = 100,
    reduction: str = "sum",
) -> jax.Array:
    """SOT-GLP's local score `phi (B, C)`.

    Args:
      local: L2-normalised V-V patch features `(B, N, D)`.
      local_text: L2-normalised local prompt features `(C, P, D)`.
      top_k: patches kept per (image, class), ranked by mean similarity to the
        class's prompts (indices carry no gradient; the gathered similarities do).
      epsilon, iterations: entropic regularisation and fixed Sinkhorn iterations;
        uniform marginals 1/K and 1/P, cost `1 - sim`, the plan under stop-gradient.
      reduction: "sum" (paper: `sum_{u,v} T sim`) or "mean" (released code:
        `mean_v sum_u`, i.e. a further 1/P).
    """
    sim = patch_prompt_similarity(local, local_text)
    return transported_similarity(*sparse_transport(sim, top_k, epsilon, iterations), reduction)


def _masked_ce(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits, axis=-1)
    return masked_mean(-jnp.take_along_axis(logp, jnp.maximum(labels, 0)[:, None], axis=-1)[:, 0], mask)


class Prompts:
    """The prompt batch's class-name tokens `(C, L)`, cut at the longest EOT, and EOT positions.

    `embed` gives their embeddings `(C, L, W)`, which `build` makes the frozen
    parameter `name_embeddings`, so the step receives them as an argument: closed
    over, they would be compiled into the step as a constant (1000 ImageNet names:
    49 MB, folded into a gathered copy per prompt), and kept here they would be a
    host copy the trainer cannot drop.
    """

    def __init__(self, class_names, n_ctx: int):
        # One spare column: a prompt that CLIP's 77 tokens would cut (its name cut off) has its EOT past them.
        ids = tokenize([" ".join(["X"] * n_ctx) + f" {name}." for name in class_names], CONTEXT_LENGTH + 1)
        self.eot = ids.argmax(-1).astype(np.int32)  # after splicing, the context sits where the X's were
        cut = [name for name, eot in zip(class_names, self.eot) if eot >= CONTEXT_LENGTH]
        if cut:
            raise InvalidInput(
                f"the prompts of {len(cut)} class(es) ({', '.join(map(repr, cut[:3]))}) are longer than CLIP's "
                f"{CONTEXT_LENGTH - 2} tokens with sot_glp.init_text's {n_ctx} context tokens: shorten "
                "sot_glp.init_text"
            )
        self.ids = ids[:, : clip.eot_length(self.eot.max(), CONTEXT_LENGTH)]
        self.n_ctx = n_ctx

    def embed(self, model: clip.CLIP, clip_params) -> np.ndarray:
        return np.asarray(model.apply({"params": clip_params}, self.ids, method="embed_tokens"))

    def token_embeddings(self, ctx: jax.Array, name_embeddings: jax.Array, class_index: np.ndarray) -> jax.Array:
        """`(n, L, W)`: SOT, the n context blocks `ctx (n, M, W)`, then class `class_index[i]`'s name tokens."""
        names = name_embeddings[class_index]
        return jnp.concatenate([names[:, :1], ctx.astype(names.dtype), names[:, 1 + self.n_ctx :]], axis=1)


def check_settings(config: ml_collections.ConfigDict, arch: clip.CLIPConfig) -> None:
    """`config.sot_glp`'s values for a CLIP of architecture `arch`. Out of range they failed inside the traced step
    (0 prompts: a division by zero; more patches than the image has: JAX's top_k), before it (an empty init_text:
    a division by zero) or trained on nothing (no patch, no Sinkhorn iteration)."""
    c = config.sot_glp
    settings.text(config, "sot_glp.init_text", "the words the global prompts start from")
    for key in ("learn_proj", "class_specific_locals", "vv_layer0_ori"):  # else taken as truth
        settings.choice(config, f"sot_glp.{key}", settings.TRUE_OR_FALSE)
    if not get_tokenizer().encode(c.init_text):
        raise InvalidInput(
            f"sot_glp.init_text {c.init_text!r} has no words: its tokens set the prompts' context length and "
            "initialise the global prompts (the paper's 'a photo of a': 4 tokens)"
        )
    settings.choice(config, "sot_glp.prediction", PREDICTIONS)
    settings.choice(config, "sot_glp.local_reduction", LOCAL_REDUCTIONS)
    settings.choice(config, "sot_glp.local_stream", LOCAL_STREAMS)
    if c.local_stream != "vv" and c.vv_layer0_ori:
        raise InvalidInput(
            f"sot_glp.vv_layer0_ori changes the V-V stream, which sot_glp.local_stream {c.local_stream!r} does not "
            "use: set it False (the `reference` variant sets it True), or local_stream 'vv'"
        )
    for key in ("n_global", "n_local"):
        settings.whole(config, f"sot_glp.{key}", 1)
    settings.whole(config, "sot_glp.ot_iterations", ot.MIN_ITERATIONS)  # 1 failed in the traced step, in jaxood.ot
    settings.whole(config, "sot_glp.top_k", 1, arch.num_patches)  # the image's patches
    settings.whole(config, "sot_glp.prompt_chunk", 0)  # 0: all prompts at once
    for key in ("tau", "ood_temperature"):
        settings.number(config, f"sot_glp.{key}", above=0)
    settings.number(  # the demo at 1e-8 trained on a local loss of 6e4 (8.8 at 1e-6), silently; 1e-9 stopped at NaN
        config, "sot_glp.ot_epsilon", least=ot.MIN_EPSILON,
        why="below it the float32 Sinkhorn plans lose their mass to rounding (jaxood.ot.MIN_EPSILON)",
    )  # fmt: skip
    settings.number(config, "sot_glp.lam", least=0)


def trainable_rules(config: ml_collections.ConfigDict) -> tuple[tuple[str, str], ...]:
    """The prompts (and the local projection, with `learn_proj`) train, in optimiser group "prompts"; CLIP is frozen."""
    return (
        (r"^(global_ctx|local_ctx)$", "prompts"),
        (r"^local_proj$", "prompts" if config.sot_glp.learn_proj else "frozen"),
        (r"^(clip/|name_embeddings$)", "frozen"),
    )


def build(config: ml_collections.ConfigDict, model: clip.CLIP, clip_params, class_names, mesh) -> Method:
    check_settings(config, model.cfg)
    c = config.sot_glp
    n_classes, n_global, n_local = len(class_names), c.n_global, c.n_local
    init_ids = tokenize([c.init_text])
    n_ctx = int(init_ids.argmax(-1)[0]) - 1
    prompts = Prompts(class_names, n_ctx)
    width = model.cfg.text.width
    init_ctx = np.asarray(model.apply({"params": clip_params}, init_ids[:, 1 : 1 + n_ctx], method="embed_tokens"))[0]
    rng = np.random.RandomState(config.seed)
    # Xavier-uniform over the whole tensor, with PyTorch's fans (its dims 1 and 0, times the rest's size): the
    # class-specific (C, P, M, W) or the shared pool (P, M, W).
    local_shape = (n_classes, n_local, n_ctx, width) if c.class_specific_locals else (n_local, n_ctx, width)
    bound = math.sqrt(6.0 / ((local_shape[0] + local_shape[1]) * math.prod(local_shape[2:])))
    params = {
        "clip": clip_params,
        "global_ctx": np.broadcast_to(init_ctx, (n_global, n_ctx, width)).astype(np.float32).copy(),
        "local_ctx": rng.uniform(-bound, bound, local_shape).astype(np.float32),
        "local_proj": np.eye(model.cfg.vision.width, dtype=np.float32),
        "name_embeddings": prompts.embed(model, clip_params),
    }

    # The C * (G + P) prompt batch: G global blocks per class, then P local blocks per class.
    cls_global = np.tile(np.arange(n_classes), n_global)
    cls_local = np.repeat(np.arange(n_classes), n_local)
    class_index = np.concatenate([cls_global, cls_local])
    eot = jnp.asarray(prompts.eot[class_index])
    n_devices = mesh.devices.size
    per_device = -(-len(class_index) // n_devices)
    chunk = min(c.prompt_chunk or per_device, per_device)
    n_chunks = -(-per_device // chunk)
    pad = n_devices * n_chunks * chunk - len(class_index)
    prompt_sharding = split_rows(mesh)

    def encode(clip_params, tokens, eots):
        tokens = jax.lax.with_sharding_constraint(tokens, prompt_sharding)
        return model.apply({"params": clip_params}, tokens, eots, method="encode_text_embeddings")

    def encode_in_chunks(clip_params, tokens, eots):
        """Each device's rows in `n_chunks` chunks, one after another; under `jax.checkpoint` the backward keeps
        only a chunk's input and recomputes its activations, so the text tower needs memory for one chunk."""
        if n_chunks == 1:
            return encode(clip_params, tokens, eots)

        def chunked(x):  # (devices * n_chunks * chunk, ...) -> (n_chunks, devices * chunk, ...), rows stay put
            x = x.reshape(n_devices, n_chunks, chunk, *x.shape[1:]).swapaxes(0, 1)
            return x.reshape(n_chunks, n_devices * chunk, *x.shape[3:])

        feats = jax.lax.map(lambda te: jax.checkpoint(encode)(clip_params, *te), (chunked(tokens), chunked(eots)))
        feats = feats.reshape(n_chunks, n_devices, chunk, -1).swapaxes(0, 1)
        return feats.reshape(n_devices * n_chunks * chunk, -1)

    def text_features(params):
        glob = jnp.broadcast_to(params["global_ctx"][:, None], (n_global, n_classes, n_ctx, width))
        local = jnp.broadcast_to(params["local_ctx"], (n_classes, n_local, n_ctx, width))  # a shared pool, per class
        ctx = jnp.concatenate([glob.reshape(-1, n_ctx, width), local.reshape(-1, n_ctx, width)])
        tokens = prompts.token_embeddings(ctx, params["name_embeddings"], class_index)
        eots = eot
        if pad:
            tokens = jnp.concatenate([tokens, jnp.repeat(tokens[:1], pad, 0)])
            eots = jnp.concatenate([eot, jnp.repeat(eot[:1], pad)])
        feats = normalize(encode_in_chunks(params["clip"], tokens, eots)[: len(class_index)])
        return feats[: n_global * n_classes].reshape(n_global, n_classes, -1), feats[n_global * n_classes :].reshape(
            n_classes, n_local, -1
        )

    def image_features(params, images):
        g, local = model.apply(
            {"params": params["clip"]},
            images,
            params["local_proj"],
            c.vv_layer0_ori,
            c.local_stream,
            method="encode_image_dense",
        )
        return normalize(g), normalize(local)

    transport = functools.partial(sparse_transport, top_k=c.top_k, epsilon=c.ot_epsilon, iterations=c.ot_iterations)

    def prediction(mean_cos, phi):  # the class logits from every global prompt's mean cosine and the local score
        return (mean_cos + phi) if c.prediction == "reference" else (mean_cos / c.tau + c.lam * phi / c.tau)

    def loss(params, state, batch, rng):
        global_t, local_t = text_features(params)
        z, patches = image_features(params, batch["image"])
        cos = jnp.einsum("bd,gcd->bgc", z, global_t)  # (B, G, C)
        keep = max(n_global - int(0.75 * n_global), 1)
        noise = jax.random.uniform(rng, (z.shape[0], n_global))
        chosen = (jnp.argsort(jnp.argsort(noise, axis=1), axis=1) < keep).astype(cos.dtype)  # `keep` per image
        s_global = jnp.einsum("bgc,bg->bc", cos, chosen) / keep / c.tau
        plan, support = transport(patch_prompt_similarity(patches, local_t))
        phi = transported_similarity(plan, support, c.local_reduction)
        l_global = _masked_ce(s_global, batch["label"], batch["mask"])
        l_local = _masked_ce(phi / c.tau, batch["label"], batch["mask"])
        total = l_global + c.lam * l_local
        # Each branch's accuracy, and the prediction's (every global prompt's, as evaluated), as the released code
        # logs its training batches' top1_global, top1_local and top1.
        branches = (s_global, phi, prediction(cos.mean(1), phi))
        acc, acc_local, acc_combined = (masked_accuracy(x, batch["label"], batch["mask"]) for x in branches)
        unbalanced = jnp.max(jnp.where(batch["mask"][:, None], ot.marginal_error(plan), 0.0))  # real images only
        metrics = {
            "loss": total, "loss_global": l_global, "loss_local": l_local, "train_acc": acc,
            "train_acc_local": acc_local, "train_acc_combined": acc_combined, OT_ERROR: unbalanced,
        }  # fmt: skip
        return total, (metrics, state)

    def predict_and_score(params, global_t, local_t, images):
        z, patches = image_features(params, images)
        mean_cos = jnp.einsum("bd,gcd->bc", z, global_t) / n_global
        sim = patch_prompt_similarity(patches, local_t)  # (B, C, N, P), shared by phi and the OOD score
        phi = transported_similarity(*transport(sim), c.local_reduction)
        logits = prediction(mean_cos, phi)
        t = c.ood_temperature
        local_mcm = mcm(jnp.swapaxes(sim.mean(-1), 1, 2), t)  # mean over prompts -> (B, N, C)
        global_mcm = mcm(mean_cos, t)
        parts = dict(zip(SCORE_PARTS, (global_mcm + local_mcm, global_mcm, local_mcm, max_logit(logits))))
        # Each branch's own prediction too, as the released code reports them (top1_global, top1_local).
        preds = {NAME: logits, f"{NAME} global": mean_cos, f"{NAME} local": phi}
        return {
            **{f"pred/{k}": predicted_class(v) for k, v in preds.items()},
            **{f"{NAME} / {k}": v for k, v in parts.items()},
        }

    def scorer(params) -> Scorer:
        args = (params, *jax.jit(text_features)(params))
        return Scorer(lambda a, images: predict_and_score(*a, images), args, SCORE_ROWS)

    fixes = (
        f"--config.sot_glp.prompt_chunk to fewer than the {chunk} prompts per device "
        "that go through the text tower at once (the text tower's activations shrink with it, for one more forward)"
    )
    limits = {
        OT_ERROR: (
            ot.MARGINAL_TOLERANCE,
            f"the step's Sinkhorn plans are not balanced after its {c.ot_iterations} iterations at epsilon "
            f"{c.ot_epsilon}, so the local loss is not the paper's balanced OT. Raise --config.sot_glp.ot_iterations "
            "(a resumed run may not change it: start a new workdir) or --config.sot_glp.ot_epsilon",
        )
    }
    return Method(params=params, loss=loss, scorer=scorer, memory_fixes=fixes, metric_limits=limits)
