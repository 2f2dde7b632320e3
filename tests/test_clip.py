"""Flax CLIP against Hugging Face PyTorch CLIP, and the V-V stream against NumPy."""

import json
import os
import re
import shutil
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from conftest import TINY

from jaxood.errors import InvalidInput
from jaxood.models import clip, convert
from jaxood.models.tokenizer import tokenize

TEXTS = [
    "a photo of a dog.",
    "a photo of a golden retriever, a kind of dog, sitting in the grass",
    "x",
    "the nice sea lion",
]


def _images(n, size, seed=0):
    return np.random.RandomState(seed).randn(n, size, size, 3).astype(np.float32)


def _hf_features(model, images, ids):
    with torch.no_grad():
        img = model.get_image_features(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)))
        txt = model.get_text_features(input_ids=torch.from_numpy(ids.astype(np.int64)))
    return img.pooler_output.numpy(), txt.pooler_output.numpy()


def _check_parity(directory, hf_model, n_images):
    model, params = clip.load(directory)
    images = _images(n_images, model.cfg.image_size)
    ids = tokenize(TEXTS)
    want_img, want_txt = _hf_features(hf_model, images, ids)
    got_img = jax.jit(lambda p, x: model.apply({"params": p}, x, method="encode_image"))(params, images)
    got_txt = model.apply({"params": params}, ids, method="encode_text")
    chex.assert_shape(got_img, (n_images, model.cfg.projection_dim))
    np.testing.assert_allclose(got_img, want_img, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got_txt, want_txt, atol=1e-4, rtol=0)
    np.testing.assert_allclose(params["logit_scale"], 4.2, rtol=1e-6)
    return model, params


def test_parity_tiny(tiny_hf):
    _check_parity(*tiny_hf, n_images=3)


@pytest.mark.slow
def test_parity_vit_b16(b16_hf):
    model, _ = _check_parity(*b16_hf, n_images=2)
    assert model.cfg.num_patches == 196 and model.cfg.vision.width == 768


def test_config_read_from_checkpoint(tiny_hf):
    model, params = clip.load(tiny_hf[0])
    c = model.cfg
    assert (c.vision.width, c.vision.layers, c.patch_size, c.image_size, c.projection_dim) == (64, 2, 8, 32, 32)
    chex.assert_shape(params["vision_model"]["embeddings"]["patch_embedding"], (8, 8, 3, 64))


@pytest.mark.parametrize("kept", ["both, differing", "the dicts alone"])
def test_tower_config_dicts_replace_the_tower_configs_as_in_hf(tiny_hf, tmp_path, kept):
    """Older config.json files carry `text_config_dict` / `vision_config_dict` beside (or instead of) `text_config` /
    `vision_config`, and HF's CLIPConfig builds the towers from the dicts, with its defaults for what they lack.
    Before, jaxood read the `*_config`s: where they differed it built another model (here GELU for HF's QuickGELU,
    off by far more than 1e-4), and without them a ViT-B/32 whose conversion failed."""

    def edit(cfg):
        for tower in ("text", "vision"):
            cfg[f"{tower}_config_dict"] = dict(TINY[f"{tower}_config"])
            if kept == "the dicts alone":
                del cfg[f"{tower}_config"]
            else:
                cfg[f"{tower}_config"]["hidden_act"] = "gelu"

    d = _copy_with_config(tiny_hf[0], tmp_path / "clip", edit)
    hf_model = transformers.CLIPModel.from_pretrained(d).eval()
    assert hf_model.config.text_config.hidden_act == hf_model.config.vision_config.hidden_act == "quick_gelu"
    model, _ = _check_parity(d, hf_model, n_images=2)
    assert model.cfg.vision.act == model.cfg.text.act == "quick_gelu"


# ------------------------------------------------------------------ V-V stream


def _np_layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_dense_reference(sd, cfg, images, layer0_ori):
    """NumPy vision tower from the HF state dict: ordinary stream and V-V stream.

    Written from methods.md section 1, independently of jaxood's modules.
    """
    g = lambda k: sd[k].numpy().astype(np.float64)  # noqa: E731
    p, heads = cfg["patch_size"], cfg["num_attention_heads"]
    b, h, w, _ = images.shape
    x = images.astype(np.float64).transpose(0, 3, 1, 2)  # NCHW as the conv expects
    patches = x.reshape(b, 3, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5).reshape(b, -1, 3 * p * p)
    conv = g("vision_model.embeddings.patch_embedding.weight").reshape(-1, 3 * p * p)
    tokens = patches @ conv.T
    cls = np.broadcast_to(g("vision_model.embeddings.class_embedding"), (b, 1, tokens.shape[-1]))
    x = np.concatenate([cls, tokens], 1) + g("vision_model.embeddings.position_embedding.weight")
    x = _np_layer_norm(x, g("vision_model.pre_layrnorm.weight"), g("vision_model.pre_layrnorm.bias"))
    x_vv = x.copy()
    dh = x.shape[-1] // heads
    for i in range(cfg["num_hidden_layers"]):
        pre = f"vision_model.encoder.layers.{i}."

        def lin(y, n, pre=pre):
            return y @ g(pre + n + ".weight").T + g(pre + n + ".bias")

        hh = _np_layer_norm(x, g(pre + "layer_norm1.weight"), g(pre + "layer_norm1.bias"))
        q, k, v = (lin(hh, f"self_attn.{n}_proj").reshape(b, -1, heads, dh).transpose(0, 2, 1, 3) for n in "qkv")

        def attn(a, c, d, lin=lin):
            o = _np_softmax(a @ c.transpose(0, 1, 3, 2) / np.sqrt(dh)) @ d
            return lin(o.transpose(0, 2, 1, 3).reshape(b, -1, heads * dh), "self_attn.out_proj")

        out, out_vv = attn(q, k, v), attn(v, v, v)
        x_vv = x_vv + out_vv + (out if (layer0_ori and i == 0) else 0)
        x = x + out
        h2 = _np_layer_norm(x, g(pre + "layer_norm2.weight"), g(pre + "layer_norm2.bias"))
        m = lin(h2, "mlp.fc1")
        x = x + lin(m / (1 + np.exp(-1.702 * m)), "mlp.fc2")
    post = lambda y: _np_layer_norm(y, g("vision_model.post_layernorm.weight"), g("vision_model.post_layernorm.bias"))  # noqa: E731
    return post(x[:, 0]), post(x_vv[:, 1:])


@pytest.mark.parametrize("layer0_ori", [False, True])
def test_value_value_stream_against_numpy(tiny_hf, layer0_ori):
    directory, hf_model = tiny_hf
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        vcfg = json.load(f)["vision_config"]
    sd = hf_model.state_dict()
    model, params = clip.load(directory)
    images = _images(2, 32, seed=1)
    local_proj = np.random.RandomState(2).randn(64, 64).astype(np.float32) * 0.1 + np.eye(64, dtype=np.float32)

    pooled, vv = _np_dense_reference(sd, vcfg, images, layer0_ori)
    vproj = sd["visual_projection.weight"].numpy().astype(np.float64).T
    want_global = pooled @ vproj
    want_local = vv @ local_proj.astype(np.float64) @ vproj

    got_global, got_local = model.apply({"params": params}, images, local_proj, layer0_ori, method="encode_image_dense")
    chex.assert_shape(got_local, (2, 16, 32))
    np.testing.assert_allclose(got_global, want_global, atol=1e-4)
    np.testing.assert_allclose(got_local, want_local, atol=1e-4)
    # No local projection == identity; the global output is the ordinary encode_image.
    _, got_identity = model.apply({"params": params}, images, None, layer0_ori, method="encode_image_dense")
    np.testing.assert_allclose(got_identity, vv @ vproj, atol=1e-4)
    np.testing.assert_allclose(got_global, model.apply({"params": params}, images, method="encode_image"), atol=1e-6)


def test_value_value_variants_differ(tiny_hf):
    model, params = clip.load(tiny_hf[0])
    images = _images(1, 32)
    _, a = model.apply({"params": params}, images, None, False, method="encode_image_dense")
    _, b = model.apply({"params": params}, images, None, True, method="encode_image_dense")
    assert np.abs(a - b).max() > 1e-3


def test_gl_mcm_value_patches_against_hf_torch(tiny_hf):
    """GL-MCM's local features, as its code (and LoCoOp's) computes them: the last block with each token attending
    to itself alone (`x + out_proj(v_proj(ln_1 x))`, then its MLP), `post_layernorm`, the visual projection; here
    from the HF PyTorch model's own modules, on the input of its last layer."""
    directory, hf_model = tiny_hf
    model, params = clip.load(directory)
    images = _images(2, 32, seed=3)
    with torch.no_grad():
        pixels = torch.from_numpy(images.transpose(0, 3, 1, 2))
        vision, last = hf_model.vision_model, hf_model.vision_model.encoder.layers[-1]
        h = vision(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]  # the last layer's input
        y = h + last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(h)))
        y = y + last.mlp(last.layer_norm2(y))
        want_local = hf_model.visual_projection(vision.post_layernorm(y[:, 1:])).numpy()
        want_global = hf_model.get_image_features(pixel_values=pixels).pooler_output.numpy()
    got_global, got_local = model.apply({"params": params}, images, method="encode_image_value_patches")
    chex.assert_shape(got_local, (2, 16, 32))
    np.testing.assert_allclose(got_global, want_global, atol=1e-4)
    np.testing.assert_allclose(got_local, want_local, atol=1e-4)
    _, vv = model.apply({"params": params}, images, method="encode_image_dense")
    assert np.abs(got_local - vv).max() > 1e-3  # not the V-V stream


def test_patch_tokens_against_hf_torch(tiny_hf):
    """CLIP's own patch tokens as local features (SOT-GLP's ablation without V-V, `stream="tokens"`): the last
    block's output tokens, `post_layernorm`, `local_proj`, the visual projection; here from the HF PyTorch model's
    last hidden state."""
    directory, hf_model = tiny_hf
    model, params = clip.load(directory)
    images = _images(2, 32, seed=4)
    local_proj = np.random.RandomState(5).randn(64, 64).astype(np.float32) * 0.1 + np.eye(64, dtype=np.float32)
    with torch.no_grad():
        vision = hf_model.vision_model
        tokens = vision(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2))).last_hidden_state[:, 1:]
        projected = vision.post_layernorm(tokens) @ torch.from_numpy(local_proj)
        want_local = hf_model.visual_projection(projected).numpy()
    got_global, got_local = model.apply(
        {"params": params}, images, local_proj, False, "tokens", method="encode_image_dense"
    )
    chex.assert_shape(got_local, (2, 16, 32))
    np.testing.assert_allclose(got_local, want_local, atol=1e-4)
    np.testing.assert_allclose(got_global, model.apply({"params": params}, images, method="encode_image"), atol=1e-6)
    _, vv = model.apply({"params": params}, images, local_proj, method="encode_image_dense")
    assert np.abs(got_local - vv).max() > 1e-3  # not the V-V stream


# ------------------------------------------------------------- text: EOT, prompts


def test_eot_truncation_gives_identical_features(tiny_hf):
    model, params = clip.load(tiny_hf[0])
    ids = tokenize(TEXTS)
    last_eot = int(np.max(np.argmax(ids, -1)))
    cut_ids = clip.truncate_at_eot(ids)
    assert cut_ids.shape[1] % 8 == 0 and last_eot < cut_ids.shape[1] <= last_eot + 8
    np.testing.assert_array_equal(cut_ids, ids[:, : cut_ids.shape[1]])
    full = jax.jit(lambda p, i: model.apply({"params": p}, i, method="encode_text"))(params, ids)  # traced: 77 tokens
    cut = model.apply({"params": params}, ids, method="encode_text")  # host ids: truncated
    chex.assert_shape(full, (4, 32))
    np.testing.assert_allclose(cut, full, atol=1e-6, rtol=0)


def test_eot_length_buckets():
    assert clip.eot_length(6) == 8
    assert clip.eot_length(7) == 8
    assert clip.eot_length(8) == 16
    assert clip.eot_length(76) == 77


def test_encode_text_embeddings_with_spliced_context(tiny_hf):
    """Context vectors spliced after SOT shift the EOT by M; with the embeddings of
    "a photo of a" as context, "[SOT] ctx {class}." equals the tokenised prompt."""
    model, params = clip.load(tiny_hf[0])
    bound = model.bind({"params": params})
    prefix = tokenize(["a photo of a"])[0, 1:5]
    ctx = bound.embed_tokens(prefix)  # (4, W)
    names = tokenize(["dog.", "sea lion."])
    emb = bound.embed_tokens(names)
    spliced = jnp.concatenate([emb[:, :1], jnp.broadcast_to(ctx, (2, 4, ctx.shape[-1])), emb[:, 1:-4]], axis=1)
    got = bound.encode_text_embeddings(spliced, jnp.argmax(names, -1) + 4)
    want = bound.encode_text(tokenize(["a photo of a dog.", "a photo of a sea lion."]))
    np.testing.assert_allclose(got, want, atol=1e-5)


# ------------------------------------------------------------- dtype and remat


def test_bfloat16_compute_and_remat(tiny_hf):
    model, params = clip.load(tiny_hf[0])
    images = _images(2, 32)
    ref = model.apply({"params": params}, images, method="encode_image")
    bf16, _ = clip.load(tiny_hf[0], dtype=jnp.bfloat16)
    got = bf16.apply({"params": params}, images, method="encode_image")
    assert got.dtype == jnp.float32
    cos = np.sum(np.asarray(got) * ref, -1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert cos.min() > 0.99, cos
    remat, _ = clip.load(tiny_hf[0], remat=True)
    loss = lambda m: lambda p: jnp.sum(m.apply({"params": p}, images, method="encode_image") ** 2)  # noqa: E731
    grad = lambda m: jax.jit(jax.grad(loss(m)))(params)  # noqa: E731
    chex.assert_trees_all_close(grad(remat), grad(model), atol=1e-5)


# ------------------------------------------------------------- strict conversion


def _copy_with_state(src, dst, edit):
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    state = load_file(os.path.join(src, "model.safetensors"))
    edit(state)
    save_file(state, os.path.join(dst, "model.safetensors"))
    return dst


def _copy_with_config(src, dst, edit) -> str:
    """A copy of the Hugging Face CLIP folder `src` whose config.json `edit` changed in place."""
    shutil.copytree(src, dst)
    with open(os.path.join(src, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    edit(cfg)
    with open(os.path.join(dst, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f)
    return str(dst)


def _drop(key):
    return lambda s: s.pop(key)


def _set(key, value):
    return lambda s: s.__setitem__(key, value)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            _drop("text_model.encoder.layers.1.mlp.fc2.bias"),
            r"missing parameters \(1\): text_model/encoder/layers_1/mlp/fc2/bias",
        ),
        (
            _set("vision_model.encoder.layers.2.mlp.fc1.weight", np.zeros((128, 64), np.float32)),
            r"unexpected tensors \(1\): vision_model.encoder.layers.2.mlp.fc1.weight",
        ),
        (
            _set("visual_projection.weight", np.zeros((16, 64), np.float32)),
            r"visual_projection.weight: checkpoint \(16, 64\) vs model \(64, 32\)",
        ),
    ],
    ids=["missing", "extra", "misshaped"],
)
def test_conversion_rejects_mismatched_checkpoint_naming_the_tensor(tiny_hf, tmp_path, edit, message):
    d = _copy_with_state(tiny_hf[0], tmp_path / "m", edit)
    with pytest.raises(convert.CheckpointMismatch, match=message):
        clip.load(d)


def test_pytorch_model_bin_without_torch_import(tiny_hf, tmp_path):
    directory, hf_model = tiny_hf
    d = tmp_path / "bin"
    d.mkdir()
    shutil.copy(os.path.join(directory, "config.json"), d)
    torch.save(hf_model.state_dict(), d / "pytorch_model.bin")
    _, ref_params = clip.load(directory)
    _, params = clip.load(str(d))
    chex.assert_trees_all_equal(params, ref_params)


@pytest.mark.parametrize(
    "vision, message",
    [
        ({"hidden_act": "relu"}, r"vision hidden_act must be one of 'gelu', .* or 'quick_gelu', got 'relu'"),
        ({"image_size": [224, 256]}, r"non-square sizes are not supported: \[224, 256\]"),
    ],
)
def test_unsupported_hf_config_is_a_user_error(vision, message):
    """Printed as the message alone by the command lines (a ValueError with a traceback before)."""
    with pytest.raises(InvalidInput, match=message):
        clip.CLIPConfig.from_hf({"vision_config": vision})


def test_legacy_torch_checkpoint_is_named_as_such(tiny_hf, tmp_path):
    directory, hf_model = tiny_hf
    d = tmp_path / "legacy"
    d.mkdir()
    shutil.copy(os.path.join(directory, "config.json"), d)
    torch.save(hf_model.state_dict(), d / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    with pytest.raises(InvalidInput, match=r"is a legacy \(pre-1.6\) torch checkpoint; re-save it"):
        clip.load(str(d))


def test_a_model_folder_without_a_config_or_weights_names_what_it_lacks(tiny_hf, tmp_path):
    """A folder that is not a CLIP's, one whose weights were not downloaded, and a path to a file (the config, the
    weights, OpenAI's own checkpoint) are each named with what a CLIP folder holds, or the folder or hub id to pass."""
    from jaxood.errors import InputMissing

    (tmp_path / "empty").mkdir()
    message = r"empty has no config.json: it is neither a Hugging Face CLIP directory \(config.json and its weights\) "
    with pytest.raises(
        InputMissing, match=message + r"nor a jaxood CLIP checkpoint \(jaxood_clip.json and params.msgpack\)$"
    ):
        clip.load(str(tmp_path / "empty"))
    (tmp_path / "config_only").mkdir()
    shutil.copy(os.path.join(tiny_hf[0], "config.json"), tmp_path / "config_only")
    message = r"config_only has config.json but no weights: expected model.safetensors or pytorch_model.bin, or "
    with pytest.raises(InputMissing, match=message):
        clip.load(str(tmp_path / "config_only"))
    for name in ("config.json", "model.safetensors"):  # a file of a CLIP's folder names the folder
        given = re.escape(os.path.join(tiny_hf[0], name))
        with pytest.raises(InputMissing, match=rf"^'{given}' is a file, not a CLIP's folder: pass the folder holding"):
            clip.load(os.path.join(tiny_hf[0], name))
    openai = tmp_path / "cache" / "clip" / "ViT-B-16.pt"  # OpenAI's own checkpoint, as its clip package keeps one
    openai.parent.mkdir(parents=True)
    openai.write_bytes(b"PK")
    with pytest.raises(
        InputMissing, match=r"checkpoints are not read; pass openai/clip-vit-base-patch16, the same CLIP"
    ):
        clip.load(str(openai))
    (tmp_path / "notes.txt").write_text("", encoding="utf-8")
    with pytest.raises(InputMissing, match=r"notes.txt' is a file, not a CLIP's folder: pass a local Hugging Face"):
        clip.load(str(tmp_path / "notes.txt"))
    with pytest.raises(InputMissing, match=r"^'Toy' is neither .*, or toy \(the tiny CLIP that ships with jaxood\)$"):
        clip.load("Toy")  # the embedded CLIP's name, misspelt: the choices did not name it


def test_a_clip_folder_holding_a_checkpoints_folder_loads(tiny_hf, tmp_path):
    """A Hugging Face CLIP's folder that also holds a folder named checkpoints (its own fine-tuning's) was refused as
    a jaxood.train workdir, which the test of a run's workdir took any folder with config.json and checkpoints/ for:
    a run's config.json holds a method's settings."""
    shutil.copytree(tiny_hf[0], tmp_path / "clip")
    (tmp_path / "clip" / "checkpoints" / "500").mkdir(parents=True)
    model, _ = clip.load(str(tmp_path / "clip"))
    assert model.cfg.vision.width == clip.load(tiny_hf[0])[0].cfg.vision.width


def test_a_folder_above_a_clip_names_the_clip_folder_below_it(tiny_hf, tmp_path):
    """A folder one or two levels above a CLIP (the hub's cache of a download, models--<owner>--<name>, copied from a
    machine with network; a folder of runs, whose exported CLIP is in export/) is refused naming the CLIP folders
    below it, at most three; folders below that hold no CLIP (a run's config.json, a config without weights) are not
    named."""
    from jaxood.errors import InputMissing

    cache = tmp_path / "models--openai--clip-vit-base-patch16"
    _saved_clip(tiny_hf, cache / "snapshots" / "3d74acf", jaxood=False)
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text("3d74acf", encoding="utf-8")
    (cache / "snapshots" / "0c4b2d1").mkdir()  # a revision whose weights were not fetched
    shutil.copy(os.path.join(tiny_hf[0], "config.json"), cache / "snapshots" / "0c4b2d1")
    with pytest.raises(
        InputMissing, match=rf"; pass the CLIP folder below it: {re.escape(str(cache))}/snapshots/3d74acf$"
    ):
        clip.load(str(cache))
    clip.load(str(cache / "snapshots" / "3d74acf"))  # the folder named loads

    runs = tmp_path / "runs"
    for run in ("a", "b", "c", "d"):
        _saved_clip(tiny_hf, runs / run / "export", jaxood=True)
        (runs / run / "config.json").write_text("{}", encoding="utf-8")  # the run's config, no CLIP's
    exports = " or ".join(re.escape(str(runs / run / "export")) for run in "abc")
    with pytest.raises(InputMissing, match=rf"jaxood CLIP checkpoint .*; pass the CLIP folder below it: {exports}$"):
        clip.load(str(runs))


def test_a_folder_of_an_openclip_checkpoint_says_what_jaxood_reads_instead(tiny_hf, tmp_path):
    """A LAION model that open_clip fetched keeps only OpenCLIP's files in the hub's cache: its folder was refused as
    neither kind of CLIP folder, OpenCLIP unnamed. It is now named, with the hub id that fetches the Hugging Face
    files of the same model (from the cache's folder name), or the folder above it."""
    from jaxood.errors import InputMissing

    cache = tmp_path / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    snapshot = cache / "snapshots" / "08f73555"
    snapshot.mkdir(parents=True)
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        (snapshot / name).write_text("{}", encoding="utf-8")
    said = (
        f"; {snapshot} holds an OpenCLIP checkpoint (open_clip_config.json), which jaxood does not read: pass the same "
        "model's Hugging Face files (config.json and its weights), which LAION's hub repos keep beside OpenCLIP's and "
        "jaxood fetches given laion/CLIP-ViT-B-32-laion2B-s34B-b79K where there is network"
    )
    for given in (snapshot, cache):
        with pytest.raises(InputMissing, match=rf"^{re.escape(str(given))} has no config.json: .*{re.escape(said)}$"):
            clip.load(str(given))
    mine = tmp_path / "my_openclip"
    shutil.copytree(snapshot, mine)
    with pytest.raises(InputMissing, match=r"which jaxood does not read: .* fetches given its hub id \(owner/name\) "):
        clip.load(str(mine))
    _saved_clip(tiny_hf, cache / "snapshots" / "1a2b3c4d", jaxood=False)  # a CLIP below is named, not OpenCLIP
    with pytest.raises(InputMissing, match=r"; pass the CLIP folder below it: .*/1a2b3c4d$"):
        clip.load(str(cache))


def _saved_clip(tiny_hf, d, jaxood: bool):
    """The tiny CLIP in the new folder `d`: as a jaxood checkpoint, or a copy of its Hugging Face directory."""
    if jaxood:
        model, params = clip.load(tiny_hf[0])
        convert.save(str(d), model.cfg, params)
    else:
        shutil.copytree(tiny_hf[0], d)


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin", "params.msgpack"])
def test_weights_cut_short_name_the_file_and_the_fix(tiny_hf, tmp_path, weights):
    """An interrupted download or copy used to fail with the parser's traceback (safetensors' header error,
    msgpack's "incomplete input"), or, for a torch zip, as a "legacy (pre-1.6) torch checkpoint"."""
    d = tmp_path / "cut"
    _saved_clip(tiny_hf, d, jaxood=weights == "params.msgpack")
    if weights == "pytorch_model.bin":
        (d / "model.safetensors").unlink()
        torch.save(tiny_hf[1].state_dict(), d / weights)
    path = d / weights
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    message = f"{re.escape(str(path))} cannot be read .*it may be cut short by an interrupted download or copy"
    with pytest.raises(InvalidInput, match=message):
        clip.load(str(d))


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("config.json", '{"model_type": "clip", "text_con', r"config\.json is not valid JSON \(.*\): copy or download"),
        ("config.json", '{"model_type": "siglip"}', r"config\.json is the config of a 'siglip' model, not a CLIP"),
        ("config.json", "[1, 2]", r"config\.json holds a JSON list, not an object of settings"),
        ("jaxood_clip.json", '{"vision": {"wid', r"jaxood_clip\.json is not valid JSON"),
        (
            "model.safetensors.index.json",
            '{"metadata": {}}',
            r"index\.json has no weight_map naming the weights' shards",
        ),
    ],
)
def test_config_files_cut_short_or_of_another_model_are_named(tiny_hf, tmp_path, name, text, message):
    """They failed with json's or flax's tracebacks, or (another model's config) were read with CLIP's defaults."""
    d = tmp_path / "clip"
    _saved_clip(tiny_hf, d, jaxood=name == "jaxood_clip.json")
    if name == "model.safetensors.index.json":
        (d / "model.safetensors").unlink()
    (d / name).write_text(text)
    with pytest.raises(InvalidInput, match=message):
        clip.load(str(d))


@pytest.mark.parametrize(
    "weights", ["model.safetensors", "pytorch_model.bin", "open_clip too", "sharded", "sharded pytorch_model.bin"]
)
def test_hub_download_fetches_one_copy_of_the_weights_in_either_format(tiny_hf, tmp_path, monkeypatch, weights):
    """Hub repos such as openai/clip-vit-base-patch16 may keep only pytorch_model.bin (next to tf_model.h5 and
    flax_model.msgpack) on their main branch: asking for safetensors alone fetched config.json and no weights.
    LAION's (laion/CLIP-ViT-B-32-laion2B-s34B-b79K) keep OpenCLIP's copies of the weights beside Hugging Face's:
    `*.safetensors` fetched open_clip_model.safetensors as well, the weights twice. A repo of shards of
    pytorch_model.bin alone (as transformers 4 saved a large CLIP without safetensors) was fetched without its
    weights, and its folder refused as holding none.
    The hub is a folder here, its download `snapshot_download`'s filter (fnmatch over the repo's file names)."""
    import fnmatch

    import huggingface_hub

    directory, hf_model = tiny_hf
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(os.path.join(directory, "config.json"), repo)
    if weights == "sharded":  # model-00001-of-0000N.safetensors and model.safetensors.index.json
        hf_model.save_pretrained(tmp_path / "sharded", max_shard_size="5MB")
        for name in os.listdir(tmp_path / "sharded"):
            if "safetensors" in name:
                shutil.copy(tmp_path / "sharded" / name, repo)
    elif weights == "sharded pytorch_model.bin":  # as transformers 4 wrote them (5 writes safetensors only)
        state = hf_model.state_dict()
        halves = (dict(list(state.items())[: len(state) // 2]), dict(list(state.items())[len(state) // 2 :]))
        weight_map = {}
        for i, half in enumerate(halves, 1):
            torch.save(half, repo / f"pytorch_model-0000{i}-of-00002.bin")
            weight_map.update(dict.fromkeys(half, f"pytorch_model-0000{i}-of-00002.bin"))
        (repo / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    elif weights != "pytorch_model.bin":
        shutil.copy(os.path.join(directory, "model.safetensors"), repo)
    if weights == "open_clip too":
        for other in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            (repo / other).write_bytes(b"OpenCLIP's names for its weights: never fetched")
    if weights != "sharded pytorch_model.bin":
        torch.save(hf_model.state_dict(), repo / "pytorch_model.bin")
    for other in ("tf_model.h5", "flax_model.msgpack"):
        (repo / other).write_bytes(b"never fetched")
    fetched = []

    def snapshot_download(repo_id, allow_patterns):
        assert repo_id == "someorg/clip-like"
        out = tmp_path / "snapshots" / str(len(fetched))
        out.mkdir(parents=True)
        for name in os.listdir(repo):
            if any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                shutil.copy(repo / name, out)
        fetched.append(sorted(os.listdir(out)))
        return str(out)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    _, params = clip.load("someorg/clip-like")
    chex.assert_trees_all_equal(params, clip.load(directory)[1])
    if weights == "pytorch_model.bin":
        assert fetched == [["config.json"], ["config.json", "pytorch_model.bin"]]
    elif weights == "sharded":
        (names,) = fetched
        shards = [n for n in names if re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", n)]
        assert len(shards) > 1 and names == ["config.json", *shards, "model.safetensors.index.json"]
    elif weights == "sharded pytorch_model.bin":
        names = fetched[1]
        shards = [n for n in names if re.fullmatch(r"pytorch_model-\d{5}-of-\d{5}\.bin", n)]
        assert fetched[0] == ["config.json"] and len(shards) > 1
        assert names == ["config.json", *shards, "pytorch_model.bin.index.json"]
    else:
        assert fetched == [["config.json", "model.safetensors"]]


def test_weights_of_another_architecture_name_twenty_tensors_of_each_kind_and_count_the_others(tiny_hf, tmp_path):
    """A config.json of deeper towers than its weights: 64 parameters missing. The error named every one (the tiny
    CLIP's weights under ViT-L/14's config: 589 names, 32.6 kB), where a training checkpoint's named 20 and '...'."""

    def edit(cfg):
        for tower in ("text", "vision"):
            cfg[f"{tower}_config"]["num_hidden_layers"] = 4

    with pytest.raises(convert.CheckpointMismatch) as err:
        clip.load(_copy_with_config(tiny_hf[0], tmp_path / "clip", edit))
    lines = str(err.value).splitlines()
    assert len(lines) == 2 and lines[1].startswith("  missing parameters (64): text_model/encoder/layers_2/")
    assert len(lines[1].split(", ")) == 21 and lines[1].endswith(", ... and 44 more")


def test_jaxood_checkpoint_roundtrip_and_mismatch(tiny_hf, tmp_path):
    model, params = clip.load(tiny_hf[0])
    convert.save(str(tmp_path / "ck"), model.cfg, params)
    model2, params2 = clip.load(str(tmp_path / "ck"))
    assert model2.cfg == model.cfg
    chex.assert_trees_all_equal(params2, params)
    params["text_projection"]["kernel"] = np.zeros((64, 7), np.float32)
    del params["vision_model"]["post_layernorm"]["bias"]
    convert.save(str(tmp_path / "bad"), model.cfg, params)
    with pytest.raises(convert.CheckpointMismatch) as err:
        clip.load(str(tmp_path / "bad"))
    assert "vision_model/post_layernorm/bias" in str(err.value)
    assert "text_projection/kernel: jaxood checkpoint" in str(err.value)


def test_hub_id_offline_gives_clear_error():
    code = "from jaxood.models import clip; clip.load('openai/clip-vit-base-patch16')"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME="/nonexistent-jaxood-test")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0
    assert "could not fetch 'openai/clip-vit-base-patch16'" in out.stderr
    # The files `load` reads, not the whole repo (the weights up to four times over, in other frameworks' formats).
    assert "`hf download openai/clip-vit-base-patch16 config.json pytorch_model.bin --local-dir DIR`" in out.stderr


def test_a_local_folder_mistyped_as_a_hub_id_says_it_is_no_folder_here(tmp_path, monkeypatch):
    """A local CLIP folder mistyped with one slash (`runs/export` for `runs/pretrain/export`) was read as a hub id:
    the error named the hub alone (offline, its download command; with network, a repository not found). Where the
    id's first part is a folder here, the error now says it is no folder here, with the close names in that one."""
    import huggingface_hub

    from jaxood.errors import InputMissing

    def offline(repo_id, allow_patterns):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    monkeypatch.chdir(tmp_path)
    for folder in ("pretrain", "exports", "other"):
        (tmp_path / "runs" / folder).mkdir(parents=True)
    said = (
        "^'runs/export' is no folder here \\(runs is one, without export in it; close to it there: exports\\), so it "
        "was read as a hub id: could not fetch 'runs/export' from the Hugging Face hub \\(OSError: no network\\)"
    )
    with pytest.raises(InputMissing, match=said):
        clip.load("runs/export")
    with pytest.raises(InputMissing, match=r"^'runs/zzz' is no folder here \(runs is one, without zzz in it\), so "):
        clip.load("runs/zzz")
    with pytest.raises(InputMissing, match=r"^could not fetch 'openai/clip-vit-base-patch16' from the Hugging Face"):
        clip.load("openai/clip-vit-base-patch16")  # no folder openai here: a hub id


def test_not_a_directory_nor_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a directory nor a Hugging Face hub id"):
        clip.load(str(tmp_path / "nope"))


def test_the_readme_python_api_example_runs():
    """The README's Python API block, on the embedded tiny CLIP (its hub id needs network) and 64-pixel images:
    every call it shows exists and gives the shapes its comments name for this CLIP."""
    from conftest import ROOT

    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        block = re.search(r"## Python API\n\n```python\n(.*?)```", f.read(), re.S)[1]
    hub_id, size = 'clip.load("openai/clip-vit-base-patch16")', "(8, 224, 224, 3)"
    assert hub_id in block and size in block
    ns = {}
    exec(block.replace(hub_id, 'clip.load("toy")').replace(size, "(8, 64, 64, 3)"), ns)  # noqa: S102
    cfg = ns["model"].cfg
    d = cfg.projection_dim
    assert ns["img"].shape == ns["glob"].shape == (8, d) and ns["local"].shape == (8, cfg.num_patches, d)
    assert ns["txt"].shape == (1, d) and ns["emb"].shape == (1, 77, cfg.text.width)
    np.testing.assert_allclose(ns["glob"], ns["img"], rtol=1e-5, atol=1e-5)  # the same global feature
