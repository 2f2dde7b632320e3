"""Contrastive pretraining: the loss by hand, caption batches, and the export round trip."""

import json
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, load_config, write_image

from jaxood.data import preprocess, toy_world
from jaxood.data.pipeline import Loader
from jaxood.data.sources import FolderSource
from jaxood.methods import COMMANDS, check_command
from jaxood.methods.clip_pretrain import contrastive_loss
from jaxood.models import clip, convert


def test_contrastive_loss_by_hand():
    img = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    txt = jnp.array([[1.0, 0.0], [0.6, 0.8]])
    # logit scale 1 (log 0): logits = img @ txt.T = [[1, 0.6], [0, 0.8]]
    loss, acc = contrastive_loss(img, txt, jnp.asarray(0.0), jnp.array([True, True]))
    l_img = -(math.log(math.e / (math.e + math.exp(0.6))) + math.log(math.exp(0.8) / (1 + math.exp(0.8)))) / 2
    l_txt = -(math.log(math.e / (math.e + 1)) + math.log(math.exp(0.8) / (math.exp(0.6) + math.exp(0.8)))) / 2
    assert float(loss) == pytest.approx((l_img + l_txt) / 2, rel=1e-6)
    assert float(acc) == 1.0
    # A masked (undecodable) pair takes no part: only the diagonal of the valid pair remains -> loss 0.
    loss, _ = contrastive_loss(img, txt, jnp.asarray(0.0), jnp.array([True, False]))
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    # logit_scale is clamped at log(100)
    big, _ = contrastive_loss(img, txt, jnp.asarray(10.0), jnp.array([True, True]))
    clamped, _ = contrastive_loss(img, txt, jnp.asarray(math.log(100.0)), jnp.array([True, True]))
    assert float(big) == pytest.approx(float(clamped), rel=1e-6)


def test_pretraining_loss_and_its_gradients_equal_hf_clip_return_loss(tiny_hf):
    """The pretraining step's loss against Hugging Face PyTorch CLIP's own `return_loss=True` loss (the symmetric
    cross-entropy of `logits_per_image` and `logits_per_text`) on the same weights, and its gradients for the
    logit scale and both projections against torch's autograd (HF keeps projections as (out, in) matrices)."""
    import torch

    from jaxood.methods import clip_pretrain
    from jaxood.models.tokenizer import tokenize

    model, params = clip.load(tiny_hf[0])
    method = clip_pretrain.build(None, model, params, (), None)
    rng = np.random.RandomState(5)
    images = rng.randn(4, 32, 32, 3).astype(np.float32)
    ids = np.asarray(tokenize(["a red circle.", "a blue square on grass.", "a green star.", "a photo of a fox."]))
    batch = {"image": jnp.asarray(images), "text": jnp.asarray(ids), "mask": jnp.ones(4, bool)}
    loss, grads = jax.value_and_grad(lambda p: method.loss(p, {}, batch, jax.random.PRNGKey(0))[0])(method.params)
    hf = tiny_hf[1]
    hf.zero_grad()
    out = hf(
        input_ids=torch.as_tensor(ids, dtype=torch.long),
        pixel_values=torch.as_tensor(images.transpose(0, 3, 1, 2)),
        return_loss=True,
    )
    out.loss.backward()
    np.testing.assert_allclose(loss, out.loss.item(), rtol=1e-5)
    g = grads["clip"]
    np.testing.assert_allclose(g["logit_scale"], hf.logit_scale.grad.item(), rtol=1e-4, atol=1e-6)
    for ours, theirs in (("text_projection", hf.text_projection), ("visual_projection", hf.visual_projection)):
        want = theirs.weight.grad.numpy().T
        # float32 sums in another order are off by a few millionths of the largest gradient (jax 0.12.0.1: 1.3e-6
        # where the largest is 0.23), so the absolute tolerance follows the gradient's scale.
        np.testing.assert_allclose(g[ours]["kernel"], want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    hf.zero_grad()


def test_caption_batches():
    world = toy_world.ToyWorld("pretrain", per_class=2, size=32)
    batch = next(Loader(world, preprocess.clip_eval(32), 8, caption_length=24).train(0, 1))
    text = np.asarray(batch["text"])
    assert text.shape == (8, 24) and (text[:, 0] == 49406).all() and (text.max(-1) == 49407).all()
    captions = {world.caption(int(i)) for i in np.asarray(batch["index"])}
    assert any(c.endswith(".") for c in captions) or any(" on a" in c for c in captions)


def test_captions_cut_at_caption_length_are_said_once(capsys):
    """Captions longer than caption_length were cut to it (EOT kept), unsaid: at 5, 'a photo of a red circle on
    grass' trained as 'a photo of', without its object."""
    world = toy_world.ToyWorld("pretrain", per_class=2, size=32)
    capsys.readouterr()
    loader = Loader(world, preprocess.clip_eval(32), 8, caption_length=5)
    batches = loader.train(0, 2)
    for _ in range(2):
        next(batches)
    out = capsys.readouterr().out
    assert out.count("captions longer than caption_length 5 (SOT, 3 tokens, EOT) are cut to it, as 'a photo of") == 1
    assert "raise caption_length to train on whole captions" in out
    next(Loader(world, preprocess.clip_eval(32), 8, caption_length=24).train(0, 1))  # the longest toy caption fits
    assert "cut" not in capsys.readouterr().out


def test_captions_required_for_image_text_training(tmp_path):
    (tmp_path / "a").mkdir()
    write_image(tmp_path / "a" / "x.png", seed=0, size=(8, 8))
    with pytest.raises(ValueError, match="has no captions"):
        Loader(FolderSource(str(tmp_path)), preprocess.clip_eval(8), 1, caption_length=16)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("model_arch.vision.heads", 3, r"model_arch.vision.width 128 is not a multiple of model_arch.vision.heads 3"),
        ("model_arch.text.layers", 0, "model_arch.text.layers must be a whole number of at least 1, got 0"),
        ("model_arch.vision.act", "relu", r"model_arch.vision.act must be one of 'gelu', 'gelu_new' or 'quick_g"),
        ("model_arch.text.eps", 0.0, "model_arch.text.eps must be a number > 0, got 0.0"),
        ("model_arch.patch_size", 7, "model_arch.image_size 64 is not a multiple of model_arch.patch_size 7"),
        ("model_arch.patch_size", 65, "model_arch.patch_size must be a whole number from 1 to 64, got 65"),
        ("model_arch.vocab_size", 49407, "model_arch.vocab_size must be a whole number of at least 49408, got 49407"),
        ("model_arch.context_length", 76, "model_arch.context_length must be a whole number of at least 77, got 76"),
        ("model_arch.projection_dim", 0, "model_arch.projection_dim must be a whole number of at least 1, got 0"),
        ("caption_length", 0, "caption_length must be a whole number from 3 to 77, got 0"),
        ("caption_length", 78, "caption_length must be a whole number from 3 to 77, got 78"),
        ("shots", 16, r"shots 16 picks training images per class, but image-text pretraining \(caption_length 20\)"),
    ],
)
def test_bad_architecture_or_caption_length_fails_before_work(key, value, message, tmp_path):
    """An architecture the model cannot build used to fail in the first traced call with JAX's reshape (heads,
    patches) or lookup (activation) errors; a vocabulary smaller than the tokenizer's made NaN embeddings and a NaN
    loss; a caption length of 0 trained CLIP pretraining as a classifier, failing on its 28 classes against the
    ID set's 12; `shots` was ignored, silently (pretraining learns from every captioned image)."""
    from jaxood import train as trainer
    from jaxood.errors import InvalidInput

    with pytest.raises(InvalidInput, match=message):
        trainer.train(load_config("toy_clip", num_steps=2, **{key: value}), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("eval_every, periodic", [(1000, " and eval_every 1000's"), (0, "")])
def test_pretraining_without_its_zero_shot_rows_fails_before_work(eval_every, periodic, tmp_path):
    """`eval_every` without the zero-shot rows (pretraining's only prediction) scored the ID set for no figure; so
    did the closing evaluation, whose report said "No score rows (config.scores names none). ID accuracy (%): none"
    of a config whose scores named two."""
    from jaxood import train as trainer
    from jaxood.errors import InvalidInput

    config = load_config("toy_clip", num_steps=2, eval_zero_shot=False, eval_every=eval_every)
    with pytest.raises(InvalidInput) as refused:
        trainer.train(config, str(tmp_path / "run"))
    assert str(refused.value) == (
        "image-text pretraining's only prediction and score rows are the zero-shot ones of the CLIP it trains, which "
        f"eval_zero_shot False leaves out: its closing evaluation{periodic} would score the ID set for no figure. Set "
        "eval_zero_shot True"
    )
    assert not (tmp_path / "run").exists()


def test_pretrain_refuses_another_methods_config_and_train_a_config_without_method(tmp_path):
    """`jaxood.pretrain` with SOT-GLP's config trained SOT-GLP and exported its frozen CLIP as if pretrained;
    `jaxood.train` with a zero-shot config failed with a KeyError on its first training setting, and with the
    pretraining config pretrained for its 9000 steps and exported nothing; `jaxood.pretrain` sent a zero-shot config
    to `jaxood.train` ("this config's method is None: train it with jaxood.train"), which refuses it, as it sent a
    planned method's, which `jaxood.train` then said is planned."""
    from jaxood import pretrain
    from jaxood import train as trainer
    from jaxood.errors import InvalidInput

    cmd = [sys.executable, "-m", "jaxood.pretrain", "--config=configs/sot_glp.py:demo", f"--workdir={tmp_path / 'p'}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "but this config's method is 'sot_glp': run python -m jaxood.train" in out.stderr
    assert not (tmp_path / "p").exists()
    cmd = [sys.executable, "-m", "jaxood.train", "--config=configs/toy_clip.py", f"--workdir={tmp_path / 't'}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and out.stderr == (
        f"error: jaxood.train {COMMANDS['jaxood.train']}, but this config's method is 'clip_pretrain': run python -m "
        f"jaxood.pretrain with the same flags, which {COMMANDS['jaxood.pretrain']}\n(JAXOOD_TRACEBACK=1 shows where it "
        "was raised)\n"
    ), out.stderr
    assert not (tmp_path / "t").exists()
    with pytest.raises(InvalidInput, match=r"but this config names no method \(config.method\): run python -m jaxo"):
        trainer.train(load_config("zeroshot", "toy"), str(tmp_path / "z"))
    with pytest.raises(InvalidInput) as refused:
        pretrain.check_pretraining(load_config("zeroshot", "toy"))
    assert str(refused.value) == (
        "jaxood.pretrain pretrains a CLIP (config.method 'clip_pretrain', as in configs/toy_clip.py), evaluates it and "
        "exports it (WORKDIR/export, the CLIP a method's --config.model names), resuming a run's --workdir at its last "
        "checkpoint, but this config names no method (config.method): run python -m jaxood.evaluate with the same "
        "flags, which scores a CLIP as it is (the zero-shot rows, as in configs/zeroshot.py)"
    )
    with pytest.raises(InvalidInput, match=r"but this config's method is 'CMA': CMA is planned and not yet in jaxood"):
        pretrain.check_pretraining(load_config("sot_glp", "demo", method="CMA"))


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(
    "config, takes_it",
    [
        (("zeroshot", "toy"), "jaxood.evaluate"),
        (("toy_clip",), "jaxood.pretrain"),
        (("sot_glp", "demo"), "jaxood.train"),
        (("sot_glp", "demo", "DOT-OOD"), None),
    ],
    ids=["zeroshot", "toy_clip", "sot_glp", "planned"],
)
def test_each_command_takes_its_own_configs(command, config, takes_it):
    """jaxood.train, jaxood.pretrain and jaxood.evaluate each refused another's config in its own words, and
    jaxood.evaluate a planned method's as a training method; one check names the command that takes it."""
    from jaxood.errors import InvalidInput

    config = load_config(*config[:2], **({"method": config[2]} if len(config) > 2 else {}))
    if command == (takes_it or "jaxood.train"):  # jaxood.train names the methods it has (its method module)
        check_command(command, config)
        return
    method = config.get("method")
    this = f"this config's method is {method!r}" if method else "this config names no method (config.method)"
    fix = (
        f"run python -m {takes_it} with the same flags, which {COMMANDS[takes_it]}"
        if takes_it
        else "DOT-OOD is planned and not yet in jaxood, as README's Status says"
    )
    with pytest.raises(InvalidInput) as refused:
        check_command(command, config)
    assert str(refused.value) == f"{command} {COMMANDS[command]}, but {this}: {fix}"


def test_toy_clip_config_has_no_variants():
    with pytest.raises(ValueError, match="configs/toy_clip.py has no variants, got 'demo'"):
        load_config("toy_clip", "demo")


def test_install_into_a_package_folder_it_may_not_write_fails_before_work(monkeypatch):
    from jaxood import pretrain
    from jaxood.errors import InvalidInput
    from jaxood.models import clip

    config = load_config("toy_clip")
    pretrain.check_pretraining(config, install=True)  # the checkout's own folder
    monkeypatch.setattr(clip, "TOY_CLIP_DIR", os.path.join(ROOT, "setup.cfg", "toy_clip"))  # under a file
    pretrain.check_pretraining(config, install=False)
    with pytest.raises(InvalidInput, match=r"--install copies the exported CLIP into .*setup.cfg/toy_clip, which"):
        pretrain.check_pretraining(config, install=True)


def test_half_precision_export_restores_float32(tiny_hf, tmp_path):
    """An array with a value beyond float16's range stays float32 (float16 stored it as inf, silently)."""
    model, params = clip.load(tiny_hf[0])
    params["logit_scale"] = np.asarray(7e4, np.float32)
    convert.save(str(tmp_path / "half"), model.cfg, params, half=True)
    _, restored = clip.load(str(tmp_path / "half"))
    leaf = restored["text_projection"]["kernel"]
    assert leaf.dtype == np.float32
    np.testing.assert_allclose(leaf, params["text_projection"]["kernel"], rtol=1e-3, atol=1e-4)
    assert restored["logit_scale"] == np.float32(7e4)
    assert os.path.getsize(tmp_path / "half" / convert.JAXOOD_PARAMS) < 0.6 * sum(
        a.nbytes for a in jax.tree.leaves(params)
    )


def test_a_checkpoint_saved_again_and_stopped_midway_is_the_one_saved_before(tiny_hf, tmp_path, monkeypatch):
    """`jaxood.pretrain --install` wrote the embedded CLIP's files in place: stopped midway (Ctrl-C, a full disk),
    they were left cut short, and every command loading the embedded CLIP failed until it ran again."""
    model, params = clip.load(tiny_hf[0])
    convert.save(str(tmp_path / "ck"), model.cfg, params)
    saved = {f: (tmp_path / "ck" / f).read_bytes() for f in os.listdir(tmp_path / "ck")}

    def stopped(tree):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert.flax.serialization, "msgpack_serialize", stopped)
    with pytest.raises(KeyboardInterrupt):
        convert.save(str(tmp_path / "ck"), model.cfg, jax.tree.map(lambda a: a + 1, params), half=True)
    assert {f: (tmp_path / "ck" / f).read_bytes() for f in os.listdir(tmp_path / "ck")} == saved


def tiny_pretrain_overrides(tmp_path) -> dict:
    """Dotted-key overrides that shrink `configs/toy_clip.py` to a 1-layer width-32 CLIP on 32 px, one image per toy
    class, 2 steps."""
    tower = {"width": 32, "layers": 1, "heads": 2, "mlp_dim": 64}
    datasets = ("train_dataset", "id_dataset", "ood_datasets.far", "ood_datasets.near", "ood_datasets.spurious")
    return {
        **{f"model_arch.{t}.{k}": v for t in ("vision", "text") for k, v in tower.items()},
        "model_arch.image_size": 32, "model_arch.projection_dim": 16,
        **{f"{d}.{k}": v for d in datasets for k, v in {"per_class": 1, "size": 32}.items()},
        "num_steps": 2, "batch_size": 8, "eval_batch_size": 16, "checkpoint_every": 2, "plots": False,
        "tensorboard": False, "cache_dir": str(tmp_path / "cache"),
    }  # fmt: skip


def tiny_pretrain_config(tmp_path):
    """`configs/toy_clip.py` with `tiny_pretrain_overrides`."""
    return load_config("toy_clip", **tiny_pretrain_overrides(tmp_path))


def test_pretrain_command_trains_on_every_captioned_image_and_exports(tmp_path, capsys, monkeypatch):
    """`configs/toy_clip.py` through the shared trainer on a tiny architecture, then the export loads as float32.
    In a multi-host job only the first host writes it (the hosts share the workdir). The workdir is given as a shell
    leaves `--workdir=~/run`: it used to become a folder named `~` in the current one."""
    from jaxood import pretrain
    from jaxood.errors import InvalidInput
    from jaxood.train import train

    c = tiny_pretrain_config(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    results, params = train(c, "~/run")
    world = toy_world.ToyWorld("pretrain", per_class=1, size=32, seed=c.train_dataset.seed)
    # Object-free texture images (label -1) train too: every image of the split is used.
    assert (world.labels() == -1).any()
    assert f"{len(world)} training images" in capsys.readouterr().out
    assert set(results["id_accuracy"]) == {"zero-shot"}
    out = pretrain.export("~/run", c, params, install=False)
    assert out == str(tmp_path / "run" / "export") and not os.listdir(tmp_path / "cwd")
    monkeypatch.setattr(clip, "TOY_CLIP_DIR", str(tmp_path / "package" / "toy_clip"))
    assert pretrain.export("~/run", c, params, install=True) == out  # the same checkpoint in the package
    assert {f: (tmp_path / "package" / "toy_clip" / f).read_bytes() for f in os.listdir(out)} == {
        f: (tmp_path / "run" / "export" / f).read_bytes() for f in os.listdir(out)
    }
    model, restored = clip.load(out)
    assert model.cfg.vision.width == 32 and restored["logit_scale"].dtype == np.float32
    np.testing.assert_allclose(restored["logit_scale"], params["clip"]["logit_scale"], rtol=1e-3)
    # The workdir or one of its step checkpoints, given as a CLIP, is named as training state, with the export.
    (step,) = os.listdir(tmp_path / "run" / "checkpoints")
    exported = (
        rf"it holds the run's training state, not a CLIP to load. Pass the CLIP this run exported, {re.escape(out)},"
    )
    for given, what in ((tmp_path / "run", "workdir"), (tmp_path / "run" / "checkpoints" / step, "step checkpoint")):
        with pytest.raises(InvalidInput, match=f"is a .*{what}.*: {exported}"):
            clip.load(str(given))
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert pretrain.export(str(tmp_path / "second_host"), c, params, install=False) is None
    assert not (tmp_path / "second_host").exists()


def test_pretraining_logs_the_trained_clips_zero_shot_accuracy_every_eval_every_steps(tmp_path):
    """A CLIP in training has no prediction but its zero-shot one, which changes as it trains: `eval_every` logs it,
    as a run ending at that step reports it, without caching text features of parameters that change (the closing
    evaluation's alone are cached)."""
    from jaxood.train import train

    every, short = tiny_pretrain_config(tmp_path), tiny_pretrain_config(tmp_path)
    every.update({"num_steps": 4, "eval_every": 2, "cache_dir": str(tmp_path / "every_cache")})
    train(every, str(tmp_path / "every"))
    results, _ = train(short, str(tmp_path / "short"))
    with open(tmp_path / "every" / "metrics.jsonl", encoding="utf-8") as f:
        logged = [r for r in map(json.loads, f) if "id_accuracy/zero-shot" in r]
    assert logged == [{"step": 2, "id_accuracy/zero-shot": 100 * results["id_accuracy"]["zero-shot"]}]
    assert len(os.listdir(tmp_path / "every_cache" / "text_features")) == 1


def test_continued_pretraining_evaluates_the_trained_clip(tmp_path, monkeypatch):
    """Pretraining that starts from a saved CLIP (not `scratch`) reports zero-shot rows of the weights it trained,
    and exports them with that CLIP's architecture: the export used to take `model_arch` (which only random weights
    use), so this one wrote a 2-layer text tower's config over 1-layer weights and did not load back."""
    from jaxood import evaluate, pretrain
    from jaxood.train import train

    c = tiny_pretrain_config(tmp_path)
    arch = clip.CLIPConfig.from_dict(c.model_arch.to_dict())
    start = jax.device_get(clip.init_params(clip.CLIP(arch), 0))
    c.model = convert.save(str(tmp_path / "start"), arch, start)
    c.model_arch.text.layers = arch.text.layers + 1  # not this run's CLIP: it continues from `start`
    c.optim.lr = 1e-2
    evaluated = []
    real_evaluate = evaluate.evaluate

    def recording_evaluate(*args, params, **kwargs):
        evaluated.append(params)
        return real_evaluate(*args, params=params, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate", recording_evaluate)
    _, params = train(c, str(tmp_path / "run"))
    kernel = evaluated[0]["visual_projection"]["kernel"]
    np.testing.assert_array_equal(kernel, np.asarray(params["clip"]["visual_projection"]["kernel"]))
    assert not np.allclose(kernel, start["visual_projection"]["kernel"])
    model, restored = clip.load(pretrain.export(str(tmp_path / "run"), c, params, install=False))
    assert model.cfg == arch
    np.testing.assert_allclose(restored["visual_projection"]["kernel"], kernel, rtol=1e-3, atol=1e-3)  # float16


def test_export_of_a_clip_continued_from_a_hub_id_takes_its_architecture_from_the_hub_copy(
    tiny_hf, tmp_path, monkeypatch
):
    """A hub id's architecture is its config.json, which the hub's cache kept from training (here a local Hugging
    Face folder stands in for the hub)."""
    import huggingface_hub

    from jaxood import pretrain

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo_id, name: os.path.join(tiny_hf[0], name))
    model, params = clip.load(tiny_hf[0])
    c = tiny_pretrain_config(tmp_path)
    c.model = "someone/tiny-clip"
    exported, _ = clip.load(pretrain.export(str(tmp_path / "run"), c, {"clip": params}, install=False))
    assert exported.cfg == model.cfg != clip.CLIPConfig.from_dict(c.model_arch.to_dict())


def test_pretrain_command_is_reproducible_across_processes(tmp_path):
    """The embedded checkpoint is reproducible with its command and seed: `python -m jaxood.pretrain` run twice, in
    processes with different string-hash seeds (Python orders a set of strings differently in each process), exports
    byte-identical checkpoints. (On the full config: the shipped run's commit and 0a41108 reached bit-identical train
    states at step 200 of 9000; README.)"""
    flags = [f"--config.{k}={v}" for k, v in tiny_pretrain_overrides(tmp_path).items()]
    exports = []
    for hash_seed in ("1", "2"):
        workdir = tmp_path / f"run{hash_seed}"
        command = [sys.executable, "-m", "jaxood.pretrain", "--config=configs/toy_clip.py", f"--workdir={workdir}"]
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run(command + flags, cwd=ROOT, env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-3000:]
        exports.append((workdir / "export" / "params.msgpack").read_bytes())
    assert exports[0] == exports[1]


def test_pretraining_without_a_score_row_reads_no_ood_set(tmp_path, capsys):
    """Pretraining has no score row of its own, so with `config.scores` empty it reports the ID accuracy alone; its
    OOD sets were opened all the same, and a missing one refused the run. SOT-GLP's own rows still score them."""
    from jaxood.errors import InputMissing
    from jaxood.train import train

    c = tiny_pretrain_config(tmp_path)
    c.scores = ""
    c.ood_datasets.gone = {"kind": "folder", "root": str(tmp_path / "gone")}
    results, _ = train(c, str(tmp_path / "run"))
    assert results["ood"] == {} and set(results["id_accuracy"]) == {"zero-shot"}
    assert "config.scores names no score, so the OOD sets (near, far, spurious, gone) are not read" in (
        capsys.readouterr().out
    )
    method = load_config("sot_glp", "demo", scores="", **{"ood_datasets.gone": c.ood_datasets.gone.to_dict()})
    with pytest.raises(InputMissing, match=r"ood_datasets\.gone"):
        train(method, str(tmp_path / "sot_glp"))
