"""OpenAI CLIP in Flax linen, parameter-for-parameter equal to Hugging Face `CLIPModel`.

Modules are named after the Hugging Face state dict (`vision_model.encoder.
layers_3.self_attn.q_proj` <- `vision_model.encoder.layers.3.self_attn.q_proj`),
so conversion (`jaxood.models.convert`) is a rename-and-transpose table.

Use:
    model, params = clip.load("path/to/hf_dir")
    feats = model.apply({"params": params}, images, method="encode_image")

Images are NHWC float32, already CLIP-normalised. Parameters are float32;
`dtype` is the compute dtype (bfloat16 on accelerators). Every public method
returns float32.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxood import settings
from jaxood.errors import InputMissing, InvalidInput, not_one_of
from jaxood.models.tokenizer import CONTEXT_LENGTH, VOCAB_SIZE

Array = jax.Array
LN_EPS = 1e-5
TOY_CLIP_DIR = os.path.join(os.path.dirname(__file__), "assets", "toy_clip")
EOT_BUCKET = 8  # text batches are truncated to a multiple of this many tokens


@dataclasses.dataclass(frozen=True)
class TowerConfig:
    """One transformer tower."""

    width: int
    layers: int
    heads: int
    mlp_dim: int
    act: str = "quick_gelu"
    eps: float = LN_EPS


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """Architecture of a CLIP model, read from a Hugging Face `config.json`."""

    vision: TowerConfig
    text: TowerConfig
    image_size: int
    patch_size: int
    vocab_size: int = 49408
    context_length: int = 77
    projection_dim: int = 512
    logit_scale_init: float = math.log(1 / 0.07)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> CLIPConfig:
        """From the dict of a Hugging Face CLIP `config.json` (missing fields take HF defaults).

        A tower's `<tower>_config_dict`, which older `config.json` files carry (openai/clip-vit-large-patch14's),
        replaces its `<tower>_config` as Hugging Face's `CLIPConfig` reads it: its keys, and HF's defaults for the
        others. Read from `<tower>_config` alone, a file where the two differ gave another model than HF's.
        """

        def tower(d: dict[str, Any], width: int, heads: int, mlp_dim: int) -> TowerConfig:
            return TowerConfig(
                width=d.get("hidden_size", width),
                layers=d.get("num_hidden_layers", 12),
                heads=d.get("num_attention_heads", heads),
                mlp_dim=d.get("intermediate_size", mlp_dim),
                act=d.get("hidden_act", "quick_gelu"),
                eps=d.get("layer_norm_eps", LN_EPS),
            )

        def tower_dict(name: str) -> dict[str, Any]:
            legacy = hf.get(f"{name}_config_dict")
            return legacy if legacy is not None else (hf.get(f"{name}_config") or {})

        v, t = tower_dict("vision"), tower_dict("text")
        vision, text = tower(v, width=768, heads=12, mlp_dim=3072), tower(t, width=512, heads=8, mlp_dim=2048)
        for name, c in (("vision", vision), ("text", text)):
            check_activation(c.act, f"{name} hidden_act")
        return cls(
            vision=vision,
            text=text,
            image_size=_scalar(v.get("image_size", 224)),
            patch_size=_scalar(v.get("patch_size", 32)),
            vocab_size=t.get("vocab_size", 49408),
            context_length=t.get("max_position_embeddings", 77),
            projection_dim=hf.get("projection_dim", 512),
            logit_scale_init=hf.get("logit_scale_init_value", 2.6592),
        )

    @classmethod
    def from_json(cls, path: str) -> CLIPConfig:
        """From a Hugging Face `config.json`, which must be a CLIP's: another model's (SigLIP's, a lone ViT's) was
        read with CLIP's defaults and refused later, leaf by leaf."""
        hf = read_json_mapping(path)
        if hf.get("model_type", "clip") != "clip":
            raise InvalidInput(
                f"{path} is the config of a {hf['model_type']!r} model, not a CLIP (model_type 'clip'): jaxood "
                "loads Hugging Face CLIPModel checkpoints (such as openai/clip-vit-base-patch16)"
            )
        return cls.from_hf(hf)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CLIPConfig:
        d = dict(d)
        return cls(vision=TowerConfig(**d.pop("vision")), text=TowerConfig(**d.pop("text")), **d)


def read_json_mapping(path: str) -> dict[str, Any]:
    """A JSON object from `path`; a file cut short or edited (a failed copy or download) is named, not a traceback."""
    with open(path, encoding="utf-8") as f:
        try:
            value = json.load(f)
        except ValueError as err:
            raise InvalidInput(f"{path} is not valid JSON ({err}): copy or download it again") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{path} holds a JSON {type(value).__name__}, not an object of settings")
    return value


def _scalar(x):
    if isinstance(x, (list, tuple)):
        if len(set(x)) != 1:
            raise InvalidInput(f"non-square sizes are not supported: {x}")
        return int(x[0])
    return int(x)


def quick_gelu(x: Array) -> Array:
    return x * jax.nn.sigmoid(1.702 * x)


_ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
}


def _attend(q: Array, k: Array, v: Array, mask: Array | None) -> Array:
    """Softmax attention over head-major (B, H, L, Dh) tensors; exponentials in float32.

    Normalising after the product with `v` (one pass less over the L x L
    weights) and batch-leading layouts made this 8x faster on XLA:CPU than an
    einsum over (B, L, H, Dh); see README "Performance".
    """
    logits = jnp.matmul(q * (1 / math.sqrt(q.shape[-1])), k.swapaxes(-1, -2), preferred_element_type=jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, -jnp.inf)
    e = jnp.exp(logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True)))
    return jnp.matmul(e.astype(v.dtype), v) / e.sum(-1, keepdims=True).astype(v.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention with HF's q/k/v/out projections: `(out, vv, value)`.

    With `value_value=True`, `vv` is the value-value stream `out_proj(softmax(v v^T / sqrt(dh)) v)`; with
    `value=True`, `value` is each token's own value `out_proj(v)`, attending to nothing else (GL-MCM's local
    features); both from the same projections, else None.
    """

    heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: Array, mask: Array | None = None, value_value: bool = False, value: bool = False):
        width = h.shape[-1]
        dense = functools.partial(nn.Dense, width, dtype=self.dtype, param_dtype=jnp.float32)
        b, length, _ = h.shape
        split = lambda y: y.reshape(b, length, self.heads, width // self.heads).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, v = (split(dense(name=n)(h)) for n in ("q_proj", "k_proj", "v_proj"))
        out_proj = dense(name="out_proj")
        merge = lambda y: y.transpose(0, 2, 1, 3).reshape(b, length, width)  # noqa: E731
        out = out_proj(merge(_attend(q, k, v, mask)))
        vv = out_proj(merge(_attend(v, v, v, None))) if value_value else None
        return out, vv, (out_proj(merge(v)) if value else None)


class MLP(nn.Module):
    mlp_dim: int
    act: str = "quick_gelu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        width = x.shape[-1]
        x = nn.Dense(self.mlp_dim, dtype=self.dtype, param_dtype=jnp.float32, name="fc1")(x)
        x = _ACTIVATIONS[self.act](x)
        return nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32, name="fc2")(x)


def _layer_norm(eps: float, dtype, name: str | None = None) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=jnp.float32, name=name)


class EncoderLayer(nn.Module):
    """Pre-LN residual block: `(x, x_vv, x_value)`. Optionally carries the V-V stream alongside, or gives this
    block's value path.

    The V-V stream `x_vv` accumulates the value-value attention output of this
    block (computed from the ordinary stream's `layer_norm1(x)`), with no MLP;
    with `vv_add_ori` it also receives the ordinary attention output. The value
    path (`value_path=True`) is the block with each token attending to itself
    alone, `y = x + out_proj(v)`, then `y + mlp(layer_norm2(y))`: GL-MCM's local
    features (as MaskCLIP's), from the last block; else None.
    """

    cfg: TowerConfig
    dtype: Any = jnp.float32
    vv_add_ori: bool = False

    @nn.compact
    def __call__(self, x: Array, x_vv: Array | None = None, mask: Array | None = None, value_path: bool = False):
        h = _layer_norm(self.cfg.eps, self.dtype, "layer_norm1")(x)
        attention = SelfAttention(self.cfg.heads, self.dtype, name="self_attn")
        attn, attn_vv, attn_value = attention(h, mask, x_vv is not None, value_path)
        if x_vv is not None:
            x_vv = x_vv + attn_vv + (attn if self.vv_add_ori else 0)
        mlp = MLP(self.cfg.mlp_dim, self.cfg.act, self.dtype, name="mlp")
        layer_norm2 = _layer_norm(self.cfg.eps, self.dtype, "layer_norm2")
        x_value = None
        if value_path:
            x_value = x + attn_value
            x_value = x_value + mlp(layer_norm2(x_value))
        x = x + attn
        x = x + mlp(layer_norm2(x))
        return x, x_vv, x_value


class Encoder(nn.Module):
    cfg: TowerConfig
    dtype: Any = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(
        self,
        x: Array,
        mask: Array | None = None,
        value_value: bool = False,
        vv_layer0_ori: bool = False,
        last_value: bool = False,
    ):
        """`(x, x_vv, x_value)`: the output, the V-V stream (`value_value`) and the last block's value path
        (`last_value`), each None when not asked for."""
        layer_cls = nn.remat(EncoderLayer, static_argnums=(4,)) if self.remat else EncoderLayer
        x_vv, x_value = (x if value_value else None), None
        for i in range(self.cfg.layers):
            layer = layer_cls(self.cfg, self.dtype, vv_add_ori=vv_layer0_ori and i == 0, name=f"layers_{i}")
            x, x_vv, x_value = layer(x, x_vv, mask, last_value and i == self.cfg.layers - 1)  # the last block's
        return x, x_vv, x_value


class VisionEmbeddings(nn.Module):
    width: int
    patch_size: int
    num_patches: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: Array) -> Array:
        b, h, w, c = images.shape
        p = self.patch_size
        kernel = self.param("patch_embedding", nn.initializers.lecun_normal(), (p, p, c, self.width))
        cls = self.param("class_embedding", nn.initializers.normal(0.02), (self.width,))
        pos = nn.Embed(self.num_patches + 1, self.width, name="position_embedding").embedding
        if (h // p) * (w // p) != self.num_patches:
            raise ValueError(f"images of {h}x{w} give {(h // p) * (w // p)} patches, the model has {self.num_patches}")
        # Non-overlapping conv == matmul over flattened (ph, pw, c) patches.
        patches = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(b, self.num_patches, p * p * c).astype(self.dtype)
        x = patches @ kernel.reshape(p * p * c, self.width).astype(self.dtype)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (b, 1, self.width)), x], axis=1)
        return x + pos.astype(self.dtype)


# The patch features a vision tower gives: the value-value stream (SOT-GLP's local features), the last block's value
# path (GL-MCM's), or the last block's output tokens (CLIP's own patch tokens; SOT-GLP's ablation without V-V).
PATCH_STREAMS = ("vv", "value", "tokens")


class VisionTransformer(nn.Module):
    cfg: CLIPConfig
    dtype: Any = jnp.float32
    remat: bool = False

    def setup(self):
        c = self.cfg
        self.embeddings = VisionEmbeddings(c.vision.width, c.patch_size, c.num_patches, self.dtype)
        self.pre_layrnorm = _layer_norm(c.vision.eps, self.dtype)
        self.encoder = Encoder(c.vision, self.dtype, self.remat)
        self.post_layernorm = _layer_norm(c.vision.eps, self.dtype)

    def __call__(self, images: Array, patches: str | None = None, vv_layer0_ori: bool = False):
        """Returns `(pooled (B, W), patches (B, N, W) or None)`, both after `post_layernorm`: the patch tokens of
        `patches` (`PATCH_STREAMS`), none by default."""
        if patches not in (None, *PATCH_STREAMS):
            raise ValueError(not_one_of("patches", patches, (None, *PATCH_STREAMS)))
        x = self.pre_layrnorm(self.embeddings(images))
        x, x_vv, x_value = self.encoder(x, None, patches == "vv", vv_layer0_ori, patches == "value")
        pooled = self.post_layernorm(x[:, 0])
        local = {"vv": x_vv, "value": x_value, "tokens": x}.get(patches)
        return pooled, (None if local is None else self.post_layernorm(local[:, 1:]))


class TextEmbeddings(nn.Module):
    vocab_size: int
    context_length: int
    width: int

    def setup(self):
        self.token_embedding = nn.Embed(self.vocab_size, self.width)
        self.position_embedding = nn.Embed(self.context_length, self.width)


class TextTransformer(nn.Module):
    cfg: CLIPConfig
    dtype: Any = jnp.float32
    remat: bool = False

    def setup(self):
        c = self.cfg
        self.embeddings = TextEmbeddings(c.vocab_size, c.context_length, c.text.width)
        self.encoder = Encoder(c.text, self.dtype, self.remat)
        self.final_layer_norm = _layer_norm(c.text.eps, self.dtype)

    def embed_tokens(self, ids: Array) -> Array:
        return self.embeddings.token_embedding(ids)

    def __call__(self, token_embeddings: Array, eot_index: Array) -> Array:
        """Pooled output at `eot_index` of `(B, L, W)` token embeddings, any L <= context."""
        length = token_embeddings.shape[1]
        if length > self.cfg.context_length:
            raise ValueError(f"text length {length} exceeds the context length {self.cfg.context_length}")
        x = (token_embeddings + self.embeddings.position_embedding.embedding[:length]).astype(self.dtype)
        mask = jnp.tril(jnp.ones((length, length), bool))[None, None]
        x, _, _ = self.encoder(x, mask)
        pooled = jnp.take_along_axis(x, eot_index[:, None, None].astype(jnp.int32), axis=1)[:, 0]
        return self.final_layer_norm(pooled)


def eot_length(max_eot_index: int, context_length: int = 77, bucket: int = EOT_BUCKET) -> int:
    """Tokens to keep for a batch whose last EOT sits at `max_eot_index`, rounded up to `bucket`."""
    return min(context_length, -(-(int(max_eot_index) + 1) // bucket) * bucket)


def truncate_at_eot(ids: np.ndarray, bucket: int = EOT_BUCKET) -> np.ndarray:
    """Cut a host batch of ids to its longest EOT position + 1 (bucketed).

    The text tower is causal, so tokens after the EOT never reach the pooled
    output: the features are identical, and `jit` sees few distinct shapes.
    """
    ids = np.asarray(ids)
    return ids[:, : eot_length(ids.argmax(-1).max(), ids.shape[1], bucket)]


class CLIP(nn.Module):
    """CLIP image and text towers with their projections and `logit_scale`."""

    cfg: CLIPConfig
    dtype: Any = jnp.float32
    remat: bool = False

    def setup(self):
        c = self.cfg
        self.vision_model = VisionTransformer(c, self.dtype, self.remat)
        self.text_model = TextTransformer(c, self.dtype, self.remat)
        proj = functools.partial(nn.Dense, c.projection_dim, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32)
        self.visual_projection = proj()
        self.text_projection = proj()
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(c.logit_scale_init), ())

    def __call__(self, images: Array, ids: Array):
        """Both embeddings (for `init`); see the `encode_*` methods."""
        return self.encode_image(images), self.encode_text(ids)

    def encode_image(self, images: Array) -> Array:
        """Projected image embedding `(B, D)`, not normalised (= HF `get_image_features`)."""
        pooled, _ = self.vision_model(images)
        return self.visual_projection(pooled).astype(jnp.float32)

    def encode_image_dense(
        self, images: Array, local_proj: Array | None = None, vv_layer0_ori: bool = False, stream: str = "vv"
    ) -> tuple[Array, Array]:
        """Global `(B, D)` and local patch features `(B, N, D)`, not normalised.

        Local features: the value-value stream over all layers (shared weights),
        or with `stream="tokens"` the last block's output tokens,
        `post_layernorm`, then `local_proj` (a `(W, W)` matrix, identity when
        None), then the visual projection. `vv_layer0_ori=True` reproduces the
        released SOT-GLP code, where layer 0's ordinary attention output also
        enters the V-V stream.
        """
        pooled, local = self.vision_model(images, stream, vv_layer0_ori)
        if local_proj is not None:
            local = local @ local_proj.astype(local.dtype)
        return (
            self.visual_projection(pooled).astype(jnp.float32),
            self.visual_projection(local).astype(jnp.float32),
        )

    def encode_image_value_patches(self, images: Array) -> tuple[Array, Array]:
        """Global `(B, D)` and GL-MCM's local patch features `(B, N, D)`, not normalised: the last block's value
        path (`EncoderLayer`), `post_layernorm`, then the visual projection, as GL-MCM's and LoCoOp's code take
        them (MaskCLIP's dense features)."""
        pooled, local = self.vision_model(images, "value")
        return self.visual_projection(pooled).astype(jnp.float32), self.visual_projection(local).astype(jnp.float32)

    def embed_tokens(self, ids: Array) -> Array:
        """Token embeddings `(B, L, W)` of ids (for splicing learned context vectors)."""
        return self.text_model.embed_tokens(ids)

    def encode_text(self, ids: Array) -> Array:
        """Projected text embedding `(B, D)` pooled at the EOT (argmax id) (= HF `get_text_features`).

        A host (NumPy) batch is first cut at its longest EOT (`truncate_at_eot`);
        traced ids are used at the length given.
        """
        if isinstance(ids, (np.ndarray, list)):
            ids = truncate_at_eot(np.asarray(ids))
        return self.encode_text_embeddings(self.embed_tokens(ids), jnp.argmax(ids, axis=-1))

    def encode_text_embeddings(self, token_embeddings: Array, eot_index: Array) -> Array:
        """Projected text embedding of token embeddings `(B, L, W)` pooled at `eot_index` `(B,)`."""
        return self.text_projection(self.text_model(token_embeddings, eot_index)).astype(jnp.float32)


COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_activation(act: str, key: str) -> None:
    """`act` (the setting `key`, from a Hugging Face config or `model_arch`) is an activation the model has."""
    if act not in _ACTIVATIONS:
        raise InvalidInput(not_one_of(key, act, sorted(_ACTIVATIONS)))


def check_arch(config, key: str = "model_arch") -> None:
    """`config[key]` (a `CLIPConfig` as a dict, for random weights) is an architecture the model can build and
    jaxood's tokenizer can feed. Before, a width that heads do not split, an image that patches do not tile or an
    unknown activation failed inside the first traced call with JAX's reshape or lookup errors, and a vocabulary
    smaller than the tokenizer's turned token ids into NaN embeddings, so the run stopped at a NaN loss."""
    for tower in ("vision", "text"):
        t = f"{key}.{tower}"
        for field in ("width", "layers", "heads", "mlp_dim"):
            settings.whole(config, f"{t}.{field}", 1)
        arch = config[key][tower]
        if arch.width % arch.heads:
            raise InvalidInput(
                f"{t}.width {arch.width} is not a multiple of {t}.heads {arch.heads}: each head takes width / heads "
                "channels"
            )
        check_activation(arch.act, f"{t}.act")
        settings.number(config, f"{t}.eps", above=0)
    image_size = settings.whole(config, f"{key}.image_size", 1)
    patch_size = settings.whole(config, f"{key}.patch_size", 1, image_size)
    if image_size % patch_size:
        raise InvalidInput(f"{key}.image_size {image_size} is not a multiple of {key}.patch_size {patch_size}")
    settings.whole(config, f"{key}.vocab_size", VOCAB_SIZE)  # CLIP's tokenizer's ids
    settings.whole(config, f"{key}.context_length", CONTEXT_LENGTH)  # its prompts' length
    settings.whole(config, f"{key}.projection_dim", 1)
    settings.number(config, f"{key}.logit_scale_init")


def compute_dtype(name: str):
    """`"auto"`: bfloat16 on accelerators, float32 on CPU; otherwise the named dtype."""
    if name not in COMPUTE_DTYPES:
        raise InvalidInput(not_one_of("dtype", name, COMPUTE_DTYPES))
    if name == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    return jnp.dtype(name)


def init_params(model: CLIP, rng: Array | int = 0) -> dict:
    """Random float32 parameters for `model` (for tests and pretraining from scratch)."""
    if isinstance(rng, int):
        rng = jax.random.PRNGKey(rng)
    c = model.cfg
    images = jnp.zeros((1, c.image_size, c.image_size, 3), jnp.float32)
    ids = jnp.zeros((1, c.context_length), jnp.int32)
    return jax.jit(model.init)(rng, images, ids)["params"]


def param_shapes(model: CLIP) -> dict:
    """The parameter tree of `model` as `jax.ShapeDtypeStruct`s, without computing anything."""
    c = model.cfg
    images = jax.ShapeDtypeStruct((1, c.image_size, c.image_size, 3), jnp.float32)
    ids = jax.ShapeDtypeStruct((1, c.context_length), jnp.int32)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), images, ids)["params"]


def load(name_or_dir: str | os.PathLike, dtype=jnp.float32, remat: bool = False) -> tuple[CLIP, dict]:
    """Load a CLIP as `(model, params)`.

    `name_or_dir`: `"toy"` (the tiny CLIP pretrained on the toy world that ships
    with jaxood), a jaxood checkpoint directory (`jaxood.models.convert.save`),
    a local Hugging Face directory (`config.json` + `model.safetensors` or
    `pytorch_model.bin`, or their shards with their index), or a hub id such as `openai/clip-vit-base-patch16`
    (downloaded through huggingface_hub when the network allows).
    """
    from jaxood.models import convert

    cfg, params = convert.load_params(resolve(name_or_dir))
    return CLIP(cfg, dtype=dtype, remat=remat), params


def resolve(name_or_dir: str | os.PathLike) -> str | os.PathLike:
    """`"toy"` as the embedded toy CLIP's folder (which must be there); a path starting with `~` expanded (a shell
    leaves `--config.model=~/clip` as it is); any other name as it is."""
    from jaxood.models import convert

    if name_or_dir != "toy":
        return os.path.expanduser(name_or_dir)
    if not os.path.exists(os.path.join(TOY_CLIP_DIR, convert.JAXOOD_CONFIG)):
        raise InputMissing(
            f"the embedded toy CLIP is missing from {TOY_CLIP_DIR}; rebuild it with "
            "`python -m jaxood.pretrain --config=configs/toy_clip.py --workdir=runs/toy_clip --install`"
        )
    return TOY_CLIP_DIR
