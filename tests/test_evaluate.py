"""`python -m jaxood.evaluate` end to end on the toy world with a small random CLIP."""

import contextlib
import functools
import glob
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jaxood.scores import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _evaluate(workdir, model_dir, cache, *extra):
    cmd = [
        sys.executable, "-m", "jaxood.evaluate", "--config=configs/zeroshot.py:toy", f"--workdir={workdir}",
        f"--config.model={model_dir}", f"--config.cache_dir={cache}", "--config.neglabel.max_candidates=300",
        "--config.csp.max_candidates=150", "--config.id_dataset.per_class=4",
        "--config.ood_datasets.near.per_class=3", "--config.ood_datasets.far.per_class=2",
        "--config.ood_datasets.spurious.per_class=2", "--config.eval_batch_size=16", *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_evaluate_end_to_end_and_cache(tiny_hf, tmp_path):
    cache = tmp_path / "cache"
    first = _evaluate(tmp_path / "run1", tiny_hf[0], cache)
    assert first.returncode == 0, first.stderr[-3000:]
    files = sorted(os.listdir(tmp_path / "run1"))
    for score in ("mcm", "gl_mcm", "maxlogit", "neglabel", "csp"):  # file names from the row titles
        assert f"hist_zero_shot_{score}.png" in files and f"roc_zero_shot_{score}.png" in files
    res = json.loads((tmp_path / "run1" / "results.json").read_text())
    assert res["counts"] == {"id": 48, "far": 24, "near": 24, "spurious": 32}
    assert len([name for name in files if name.startswith(("hist_", "roc_"))]) == 10
    assert first.stdout.splitlines()[-1] == (  # after the tables, where they and the rest are
        f"Report in {tmp_path / 'run1'}: results.md (these tables), results.json, scores.npz (each example's scores) "
        "and 10 plots (hist_*.png, roc_*.png)"
    )
    rows = res["ood"]
    assert list(rows) == [
        "zero-shot / MCM",
        "zero-shot / GL-MCM",
        "zero-shot / MaxLogit",
        "zero-shot / NegLabel",
        "zero-shot / CSP",
    ]
    for row in rows.values():
        for name in ("near", "far", "spurious"):
            assert set(row[name]) == {"fpr95", "auroc", "aupr_in", "aupr_out"}
        assert row["mean"]["auroc"] == pytest.approx(np.mean([row[s]["auroc"] for s in ("near", "far", "spurious")]))
    assert set(res["id_accuracy"]) == {"zero-shot"} and 0.0 <= res["id_accuracy"]["zero-shot"] <= 1.0
    assert res["versions"]["jax"]
    md = (tmp_path / "run1" / "results.md").read_text()
    # The commit that computed it, where jaxood runs from a git checkout, as the suite does from a clone.
    if shutil.which("git") and os.path.isdir(os.path.join(ROOT, ".git")):
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        assert res["source"]["commit"] == head.stdout.strip()
        assert f"\n\nComputed by jaxood at git commit {head.stdout.strip()}" in md
    assert "| zero-shot / GL-MCM |" in md and "Avg FPR95" in md
    # Which CLIP, computed how and where: a report read apart from its results.json did not say.
    from conftest import this_platform

    _, kind, dtype = this_platform()
    assert md.startswith(f"Model: {tiny_hf[0]}; {dtype} on 1 {kind} device(s)\n\nID examples: 48; OOD: near 24,")
    # scores.npz holds what the table was computed from: its metrics again, exactly, from the saved scores.
    with np.load(tmp_path / "run1" / "scores.npz") as saved:
        scores = dict(saved)
    for name, n in res["counts"].items():
        np.testing.assert_array_equal(scores[f"{name}/index"], np.arange(n))
        assert scores[f"{name}/label"].shape == scores[f"{name}/pred/zero-shot"].shape == (n,)
    for row, per_set in rows.items():
        for name in ("near", "far", "spurious"):
            assert metrics.ood_metrics(scores[f"id/{row}"], scores[f"{name}/{row}"]) == per_set[name]
    labels = scores["id/label"]
    assert res["id_accuracy"]["zero-shot"] == np.mean(scores["id/pred/zero-shot"] == labels)
    assert "cached text features" not in first.stdout
    # The second run reads the text features (classes and WordNet candidates) from the cache, but for one file cut
    # short, which it computes again; and it keeps the first run's report, which was in the same workdir.
    cached = sorted((cache / "text_features").iterdir())
    assert len(cached) == 5  # class prompts, neglabel ID + candidates, csp ID + candidates
    cached[0].write_bytes(cached[0].read_bytes()[:100])
    second = _evaluate(tmp_path / "run1", tiny_hf[0], cache)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("cached text features") == 4
    assert f"cache file {cached[0]} cannot be read" in second.stdout
    res2 = json.loads((tmp_path / "run1" / "results.json").read_text())
    assert res2["ood"] == res["ood"]
    (kept,) = (tmp_path / "run1" / "earlier_results").iterdir()
    assert f"moved to {kept}" in second.stdout
    assert sorted(os.listdir(kept)) == [f for f in files if f.startswith(("results.", "scores.", "hist_", "roc_"))]
    assert "scores.npz" in files
    assert json.loads((kept / "results.json").read_text()) == res and (kept / "results.md").read_text() == md


def test_evaluate_rejects_unknown_config_key(tiny_hf, tmp_path):
    out = _evaluate(tmp_path / "run", tiny_hf[0], tmp_path / "c", "--config.neglabel.temprature=0.1")
    assert out.returncode != 0 and "temprature" in out.stderr
    assert not (tmp_path / "run").exists()


def test_training_config_is_refused_before_work(tmp_path):
    """Evaluating a training config used to score the CLIP zero-shot and move the trained run's report aside."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text("{}")
    cmd = [sys.executable, "-m", "jaxood.evaluate", "--config=configs/sot_glp.py:demo", f"--workdir={run}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "jaxood.evaluate scores a CLIP as it is" in out.stderr
    assert "but this config's method is 'sot_glp': run python -m jaxood.train with the same flags" in out.stderr
    assert sorted(os.listdir(run)) == ["results.json"]


@pytest.mark.parametrize(
    "method, saved",
    [("sot_glp", ()), ("sot_glp", ("20", "40", "60.orbax-checkpoint-tmp")), ("clip_pretrain", ("100",))],
    ids=["no checkpoint", "checkpoints", "pretraining"],
)
def test_a_training_runs_workdir_is_refused_before_work(tmp_path, method, saved):
    """jaxood.evaluate given a training run's workdir (to score the trained run on other OOD sets) scored the CLIP
    zero-shot and moved the run's report aside, the run's folder then holding a zero-shot report that summarize read
    as the run's. A pretraining run's is evaluated by jaxood.pretrain, and the CLIP it trained is its export. The
    command named resumes at the run's last checkpoint (not one orbax left unfinished), or, with none (a run stopped
    before its first, which the message said it resumed at), trains from step 0."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": method}), encoding="utf-8")
    (run / "results.json").write_text("{}", encoding="utf-8")
    for step in saved:
        (run / "checkpoints" / step).mkdir(parents=True)
    cmd = [sys.executable, "-m", "jaxood.evaluate", "--config=configs/zeroshot.py:toy", f"--workdir={run}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    command = "jaxood.pretrain" if method == "clip_pretrain" else "jaxood.train"
    resumes = {
        (): "has saved no checkpoint, so it trains from step 0",
        ("20", "40", "60.orbax-checkpoint-tmp"): "resumes at its checkpoint of step 40",
        ("100",): "resumes at its checkpoint of step 100",
    }[saved]
    said = (
        f"error: --workdir {run} is the workdir of a training run (its config.json: method {method!r}), but "
        "jaxood.evaluate scores a CLIP as it is (the zero-shot rows), and would replace the trained report in the "
        f"workdir with those. To evaluate a trained run, run `python -m {command}` with its config and --workdir: "
        f"it {resumes} and evaluates it (the evaluation settings may change). For zero-shot rows alone give another "
        "--workdir"
    )
    exported = f"; the CLIP it pretrained is --config.model={run}/export\n" if method == "clip_pretrain" else "\n"
    assert out.returncode == 1 and out.stderr.startswith(said + exported), out.stderr
    assert sorted(os.listdir(run)) == sorted(["config.json", "results.json"] + ["checkpoints"] * bool(saved))


def test_workdir_url_is_refused_before_work(tiny_hf, tmp_path):
    out = _evaluate("gs://bucket/run", tiny_hf[0], tmp_path / "c")
    assert out.returncode != 0 and "--workdir must be a folder of the local file system, not a URL" in out.stderr
    assert not os.path.exists(os.path.join(ROOT, "gs:"))  # the folder its results went to before


def test_empty_workdir_is_refused_before_work(tiny_hf, tmp_path):
    """`--workdir=$RUN` with RUN unset: a traceback from os.makedirs('')."""
    out = _evaluate("", tiny_hf[0], tmp_path / "c")
    assert out.returncode == 1 and "--workdir is empty (a shell variable that is not set" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "c").exists()


@pytest.mark.parametrize("workdir", ["file", "file/run"])
def test_workdir_at_a_file_is_refused_before_work(tiny_hf, tmp_path, workdir):
    """A file where the workdir (or a folder above it) should be failed only when the report was written, after the
    whole evaluation."""
    (tmp_path / "file").write_text("")
    out = _evaluate(tmp_path / workdir, tiny_hf[0], tmp_path / "c")
    assert out.returncode != 0 and "--workdir must be a folder jaxood can write, or a path where" in out.stderr
    assert "[ID]" not in out.stdout and not (tmp_path / "c").exists()  # no image scored, no text feature cached


def test_a_workdir_in_a_runs_checkpoints_is_refused_naming_the_run(tmp_path, monkeypatch):
    """A run's checkpoints folder (or a step's in it) given as the workdir, to go on with the run, started a new run
    there from step 0, its files mixed with the run's checkpoints; jaxood.evaluate wrote its report there. Given to
    jaxood.summarize as a run, it had no report, the run unnamed."""
    from jaxood import cli, summarize
    from jaxood.errors import InputMissing

    run = tmp_path / "run"
    (run / "checkpoints" / "6").mkdir(parents=True)
    (run / "config.json").write_text('{"method": "sot_glp", "seed": 0}', encoding="utf-8")
    cmd = [sys.executable, "-m", "jaxood.train", "--config=configs/sot_glp.py:demo", f"--workdir={run}/checkpoints"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    said = (
        f"--workdir {run}/checkpoints is in the checkpoints of the run in {run}: give --workdir={run} to go on with "
        "that run (the same command resumes it, or reports it again where it ended); a new run or report needs a "
        "folder outside that run's checkpoints"
    )
    assert out.returncode == 1 and said in out.stderr, out.stderr
    assert os.listdir(run / "checkpoints") == ["6"]
    for workdir in (f"{run}/checkpoints/6", f"{run}/checkpoints/6/x/"):
        assert f"in the checkpoints of the run in {run}: " in cli._in_a_run(workdir)
    named = f"checkpoints/6 has no results.json (it is in the checkpoints of the run in {run}: give {run}); "
    with pytest.raises(InputMissing, match=re.escape(named)):
        summarize.read_reports([f"{run}/checkpoints/6", str(run)])
    monkeypatch.chdir(run / "checkpoints")  # a relative workdir: the run is named relative to the current folder
    assert cli._in_a_run("6").startswith("--workdir 6 is in the checkpoints of the run in ..: give")
    assert cli._in_a_run(f"{run}/checkpoints/runs") is None and cli._in_a_run(str(tmp_path / "new")) is None
    # A folder named checkpoints beside another tool's config.json (a project's) is a workdir as any other.
    (run / "config.json").write_text('{"model": "x"}', encoding="utf-8")
    assert cli._in_a_run(f"{run}/checkpoints") is None and cli._in_a_run(f"{run}/checkpoints/6") is None


@pytest.mark.parametrize("variant", ["imagenet", "imagenet,openood_v15", "coop,dtd", "toy"])
def test_every_evaluation_setting_but_the_model_is_free_on_resume(variant):
    """A training run resumed with other evaluation settings continues; a key evaluation adds must join EVAL_KEYS."""
    from conftest import load_config

    from jaxood.evaluate import EVAL_KEYS

    assert set(load_config("zeroshot", variant)) - set(EVAL_KEYS) == {"model", "dtype"}


@pytest.mark.parametrize("config", ["zeroshot:imagenet,openood_v15", "sot_glp:noproj,openood_v15"])
def test_imagenet_configs_evaluate_on_openood_v15_from_the_command_line(config, tmp_path):
    """`--config=configs/<file>.py:<variant>,openood_v15` swaps MOS for OpenOOD v1.5's five image lists, which
    follow `--config.ood_root`; every set opens on a fake tree in OpenOOD's layout, Textures' images under
    `images_classic` (OpenOOD's `DATA_INFO`), where jaxood looked for them under `images_largescale`. The ID set is
    OpenOOD's test list of ImageNet's validation images (45,000 of the 50,000), where it was TFDS's whole split."""
    from conftest import load_config, write_image

    from jaxood.data.classnames import imagenet_classnames, imagenet_names_by_wnid
    from jaxood.data.datasets import make_source
    from jaxood.data.sources import tfds_prompt_names

    lists = tmp_path / "benchmark_imglist" / "imagenet"
    lists.mkdir(parents=True)
    val = tmp_path / "images_largescale" / "imagenet_1k" / "val"  # flat, as OpenOOD's list names the images
    val.mkdir(parents=True)
    for i in (1, 3):
        write_image(val / f"ILSVRC2012_val_0000000{i}.JPEG", seed=i, size=(8, 8))
    (lists / "test_imagenet.txt").write_text(
        "imagenet_1k/val/ILSVRC2012_val_00000001.JPEG 65\nimagenet_1k/val/ILSVRC2012_val_00000003.JPEG 230\n"
    )
    for name in ("ssb_hard", "ninco", "inaturalist", "textures", "openimage_o"):
        images = tmp_path / ("images_classic" if name == "textures" else "images_largescale")
        (images / name).mkdir(parents=True)
        for i in range(2):
            write_image(images / name / f"{i}.png", seed=i, size=(8, 8))
        (lists / f"test_{name}.txt").write_text("".join(f"{name}/{i}.png 0\n" for i in range(2)))
    file, variant = config.split(":")
    c = load_config(file, variant)
    assert c.ood_root == "/data/openood"
    c.ood_root = str(tmp_path)
    sources = {name: make_source(spec) for name, spec in c.ood_datasets.items()}
    assert sorted(sources) == ["NINCO", "OpenImage-O", "SSB-hard", "Textures", "iNaturalist"]
    assert all(len(src) == 2 for src in sources.values())
    assert sources["NINCO"].read(1)[0] == str(tmp_path / "images_largescale" / "ninco" / "1.png")
    assert sources["Textures"].read(1)[0] == str(tmp_path / "images_classic" / "textures" / "1.png")
    id_set = make_source(c.id_dataset)
    assert id_set.read(1) == (str(val / "ILSVRC2012_val_00000003.JPEG"), 230)
    assert id_set.class_names == imagenet_classnames() and id_set.class_names[230] == "Shetland Sheepdog"
    # ... the classes, in the order, of TFDS's imagenet2012 that SOT-GLP trains on (`check_same_classes`)
    assert tfds_prompt_names("imagenet2012", list(imagenet_names_by_wnid())) == id_set.class_names
    with pytest.raises(ValueError, match="choose paper, reference, noproj, novv, shared or demo"):
        load_config("sot_glp", "demo,openood_v15")  # the toy world has its own OOD sets


@pytest.mark.parametrize(
    "dataset, images, file, template",
    [
        (
            "oxford_pets",
            "oxford_pets/images",
            "oxford_pets/split_zhou_OxfordPets.json",
            "a photo of a {}, a type of pet.",
        ),
        ("stanford_cars", "stanford_cars", "stanford_cars/split_zhou_StanfordCars.json", "a photo of a {}."),
        ("dtd", "dtd/images", "dtd/split_zhou_DescribableTextures.json", "{} texture."),
    ],
)
def test_coop_variants_train_and_test_on_coops_splits_in_its_layout(dataset, images, file, template, tmp_path):
    """`configs/sot_glp.py:<variant>,<CoOp dataset>` trains on CoOp's train split and tests on its test split of one
    of SOT-GLP's few-shot datasets (Table 1), in CoOp's DATASETS.md layout under `--config.coop_root`, with no OOD
    set; `configs/zeroshot.py:coop,<dataset>` scores the test split with CoOp's zero-shot prompt for it. Those
    datasets could be given only entry by entry, on TFDS's splits, not CoOp's."""
    from conftest import load_config, write_image

    from jaxood.data.datasets import make_source
    from jaxood.data.sources import DatasetMissing

    (tmp_path / images / "a").mkdir(parents=True)
    split = {"train": [["a/0.jpg", 0, "x_y"], ["a/1.jpg", 1, "z"]], "val": [], "test": [["a/2.jpg", 1, "z"]]}
    for i in range(3):
        write_image(tmp_path / images / "a" / f"{i}.jpg", seed=i)
    (tmp_path / file).write_text(json.dumps(split))
    trained = load_config("sot_glp", f"noproj,{dataset}")
    zero_shot = load_config("zeroshot", f"coop,{dataset}")
    for c in (trained, zero_shot):
        assert c.coop_root == "/data/coop" and c.mcm_template == template and not c.ood_datasets and not c.ood_groups
        c.coop_root = str(tmp_path)
    assert trained.sot_glp.learn_proj is False and trained.id_dataset == zero_shot.id_dataset
    train, test = make_source(trained.train_dataset), make_source(trained.id_dataset)
    assert train.read(1) == (str(tmp_path / images / "a" / "1.jpg"), 1) and len(test) == 1
    assert train.class_names == test.class_names == ("x y", "z")
    (tmp_path / file).unlink()
    with pytest.raises(
        DatasetMissing, match=r"\. To get it: CoOp's DATASETS\.md \(https://github\.com/KaiyangZhou/CoOp/"
    ):
        make_source(zero_shot.id_dataset)
    with pytest.raises(ValueError, match=r"or a CoOp dataset to train and test on instead \(caltech101, oxford_pets, "):
        load_config("sot_glp", "paper,pets")


def test_fgvc_aircraft_variants_read_its_archive_under_coop_root(tmp_path):
    """`configs/sot_glp.py:<variant>,fgvc_aircraft` and `configs/zeroshot.py:coop,fgvc_aircraft`, the tenth of
    SOT-GLP's few-shot datasets, read the archive's `data/` folder as CoOp's `fgvc_aircraft/` under
    `--config.coop_root`, with CoOp's zero-shot prompt for it."""
    from conftest import load_config, write_image

    from jaxood.data.datasets import make_source

    root = tmp_path / "fgvc_aircraft"
    (root / "images").mkdir(parents=True)
    (root / "variants.txt").write_text("A300B4\nBAE 146-200\n")
    (root / "images_variant_train.txt").write_text("1 A300B4\n2 BAE 146-200\n")
    (root / "images_variant_test.txt").write_text("3 BAE 146-200\n")
    for i in (1, 2, 3):
        write_image(root / "images" / f"{i}.jpg", seed=i)
    trained, zero_shot = load_config("sot_glp", "paper,fgvc_aircraft"), load_config("zeroshot", "coop,fgvc_aircraft")
    for c in (trained, zero_shot):
        assert c.mcm_template == "a photo of a {}, a type of aircraft." and not c.ood_datasets
        c.coop_root = str(tmp_path)
    assert trained.id_dataset == zero_shot.id_dataset
    train, test = make_source(trained.train_dataset), make_source(zero_shot.id_dataset)
    assert train.class_names == test.class_names == ("A300B4", "BAE 146-200")
    assert train.labels().tolist() == [0, 1] and test.read(0) == (str(root / "images" / "3.jpg"), 1)


def test_summarize_puts_several_runs_reports_in_one_table(tmp_path, capsys):
    """`python -m jaxood.summarize RUN ...`: the few-shot table (a run per dataset, and their mean: SOT-GLP's
    Table 1) and the OOD table (a row per run and score row, and a row's mean over the runs that have it) from the
    runs' results.json, each with the runs' sample standard deviation under the mean (DOT-OOD reports "± std" over
    three runs; "n/a" for one run's value); a set a run did not score is "-", a metric it had none of "n/a", and a mean
    or SD over fewer runs says how many. Each report was read apart before, and averaged by hand."""
    from jaxood import summarize
    from jaxood.cache import OUT_KEPT
    from jaxood.errors import InputMissing, report_user_errors

    def metrics(fpr95, auroc):
        return {"fpr95": fpr95, "auroc": auroc, "aupr_in": 0.5, "aupr_out": 0.5}

    commit = {"commit": "a" * 40, "dirty": False, "diff": None}
    reports = {
        "pets": {
            "id_accuracy": {"SOT-GLP": 0.9, "zero-shot": 0.8},
            "ood": {"SOT-GLP / GL-MCM": {"A": metrics(0.2, 0.9), "mean": metrics(0.2, 0.9)}},
            "counts": {"id": 10, "A": 5}, "step": 30, "config": {"model": "toy"}, "source": commit,
        },
        "dtd": {
            "id_accuracy": {"SOT-GLP": 0.7, "zero-shot": None},
            "ood": {
                "SOT-GLP / GL-MCM": {"A": metrics(0.4, 0.7), "B": None, "mean": None},
                "SOT-GLP / MCM": {"A": metrics(0.5, 0.6), "B": metrics(0.1, 0.95), "mean": metrics(0.3, 0.775)},
            },
            "counts": {"id": 10, "A": 5, "B": 0}, "config": {"model": "toy"}, "source": commit,
        },
    }  # fmt: skip
    for run, report in reports.items():
        (tmp_path / run).mkdir()
        (tmp_path / run / "results.json").write_text(json.dumps(report))
    runs = [str(tmp_path / run) for run in reports]
    text = summarize.summary(runs)
    pets, dtd = runs
    assert text.split("\n\n")[:4] == [
        "ID accuracy (%)",
        f"| Run | SOT-GLP | zero-shot |\n|---|---|---|\n| {pets} | 90.00 | 80.00 |\n| {dtd} | 70.00 | n/a |\n"
        "| Mean of 2 runs | 80.00 | 80.00 (1 of 2 runs) |\n| SD of 2 runs | 14.14 | n/a (1 of 2 runs) |",
        "FPR95 (%) lower is better / AUROC (%) higher is better",
        "| Run | Score | A FPR95 | A AUROC | B FPR95 | B AUROC | Avg FPR95 | Avg AUROC |\n"
        "|---|---|---|---|---|---|---|---|\n"
        f"| {pets} | SOT-GLP / GL-MCM | 20.00 | 90.00 | - | - | 20.00 | 90.00 |\n"
        f"| {dtd} | SOT-GLP / GL-MCM | 40.00 | 70.00 | n/a | n/a | n/a | n/a |\n"
        f"| {dtd} | SOT-GLP / MCM | 50.00 | 60.00 | 10.00 | 95.00 | 30.00 | 77.50 |\n"
        "| Mean of 2 runs | SOT-GLP / GL-MCM | 30.00 | 80.00 | n/a | n/a | 20.00 (1 of 2 runs) | 90.00 (1 of 2 runs) |"
        "\n"
        "| SD of 2 runs | SOT-GLP / GL-MCM | 14.14 | 14.14 | n/a | n/a | n/a (1 of 2 runs) | n/a (1 of 2 runs) |",
    ]
    assert f"- {pets}: training step 30, toy; computed by jaxood at git commit {'a' * 40}" in text
    assert "different code" not in text
    only = summarize.summary(runs, ["SOT-GLP / MCM"])
    assert "GL-MCM" not in only and f"| {dtd} | SOT-GLP / MCM |" in only
    # A report's file for its run (`runs/*/results.json`, as a shell's glob gives): "has no results.json" before
    (tmp_path / "dtd" / "results.md").write_text("dtd's tables", encoding="utf-8")
    assert summarize.summary([f"{pets}/results.json", f"{dtd}/./results.md"]) == text
    main = report_user_errors(summarize.main, OUT_KEPT)
    assert main([*runs, "--rows=SOT-GLP / MCM", f"--out={tmp_path / 'summary.md'}"]) == 0
    assert (tmp_path / "summary.md").read_text(encoding="utf-8") == only
    assert main([*runs, "--rows=SOT-GLP / MCM,SOT-GLP / MCM ", f"--out={tmp_path / 'twice.md'}"]) == 0  # shown once
    assert (tmp_path / "twice.md").read_text(encoding="utf-8") == only
    capsys.readouterr()
    for argv, message in [
        ([pets, str(tmp_path / "none"), str(tmp_path)], r"error: 2 of the 3 runs have no report to summarise: \S+none "
         r"does not exist; \S+ has no results\.json\. A run's report is its workdir's results\.json, which "),
        ([pets, str(tmp_path / "none")], r"error: 1 of the 2 runs has no report to summarise: \S+none does not "
         r"exist\. A run's report"),  # "1 of the 2 runs have" before, and "1 of the 1 runs" for one
        ([str(tmp_path / "none")], r"error: the run has no report to summarise: \S+none does not exist\. A run's "),
        ([pets, pets + "/"], r"error: \S+pets/: given twice \(the same folder as an earlier run\)"),
        ([pets, "--rows=SOT-GLP/MCM"], r"error: --rows names 'SOT-GLP/MCM', which no run has: the runs' score rows are "
         r"'SOT-GLP / GL-MCM'\n"),
        ([pets, "--rows= , "], r"error: --rows names no score row \(empty: a shell variable that is not set\?\): leave "
         r"it out for all, or name some of the runs' score rows, comma-separated: 'SOT-GLP / GL-MCM'\n"),
    ]:  # fmt: skip
        assert main(argv) == 1
        assert re.match(message, capsys.readouterr().err)
    reports["pets"]["source"] = {"commit": "b" * 40, "dirty": True, "diff": "c" * 16}
    (tmp_path / "pets" / "results.json").write_text(json.dumps(reports["pets"]))
    assert summarize.summary(runs).endswith(
        f"uncommitted changes (diff {'c' * 16})\n- {dtd}: toy; computed by jaxood at git commit {'a' * 40}\n\n"
        "The runs were computed by different code (above).\n"
    )
    no_report = r"not a jaxood report: no 'ood' and 'counts' tables"
    for broken, why in [("{", r"Expecting"), ("[]", no_report), ('{"ood": {}}', no_report)]:
        (tmp_path / "dtd" / "results.json").write_text(broken)
        with pytest.raises(InputMissing, match=rf"dtd/results\.json cannot be read as a report \({why}"):
            summarize.summary(runs)


@pytest.mark.parametrize(
    "name, reported",
    [("results.md", True), ("results.json", True), ("scores.npz", True), ("roc_sot_glp_gl_mcm.png", True),
     ("config.json", True), ("metrics.jsonl", False), ("trained_by.json", False), ("training_curves.png", False)],
)  # fmt: skip
def test_summarize_refuses_an_out_that_jaxood_wrote_in_a_run(tmp_path, capsys, name, reported):
    """`--out` given as a file of a run's report or training (`--out=runs/pets/results.md`, the name the summary is
    written in) wrote the summary over it: the run's tables lost, or its results.json, which summarize then could not
    read, or its config.json, which a resumed run is checked against. It is refused before anything is read, in a
    run's folder with its report or, a run still training, without one; the run's files are as they were."""
    from jaxood import summarize
    from jaxood.cache import OUT_KEPT
    from jaxood.errors import report_user_errors

    run = tmp_path / "pets"
    run.mkdir()
    report = {"id_accuracy": {"SOT-GLP": 0.9}, "ood": {}, "counts": {"id": 10}}
    (run / "config.json").write_text(json.dumps({"method": "sot_glp"}), encoding="utf-8")
    if reported:
        (run / "results.json").write_text(json.dumps(report))
    if not (run / name).exists():
        (run / name).write_bytes(b"the run's own")
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    main = report_user_errors(summarize.main, OUT_KEPT)
    out = f"{run}/../pets/{name}"
    assert main([str(run), f"--out={out}"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[0] == (
        f"error: --out {out} is one of the files jaxood wrote in {run}, which the summary would write over: give "
        f"another --out, as {run / 'summary.md'}"
    )
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before
    if reported:  # a file of its own in the run's folder is written
        assert main([str(run), f"--out={run / 'summary.md'}"]) == 0


def test_evaluate_missing_dataset_fails_before_work(tiny_hf, tmp_path):
    """Every missing dataset is named in one error: ImageNet and MOS' four OOD sets took five runs to learn of."""
    cmd = [
        sys.executable,
        "-m",
        "jaxood.evaluate",
        "--config=configs/zeroshot.py",
        f"--workdir={tmp_path / 'run'}",
        f"--config.model={tiny_hf[0]}",
        f"--config.id_dataset.data_dir={tmp_path}",
        f"--config.ood_root={tmp_path}",
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert "'imagenet2012' is not prepared" in out.stderr and "ILSVRC2012_img_train.tar" in out.stderr
    assert "Traceback" not in out.stderr  # the message alone, not under 30 lines of jaxood's internals
    # ... nor after TFDS's warning that a folder which is not there "has no dataset_info.json"
    assert out.stderr.startswith(
        "error: 5 of the 5 datasets are missing:\nconfig.id_dataset: TFDS dataset 'imagenet2012' is not prepared"
    ), out.stderr
    for name, folder in (("iNaturalist", "iNaturalist"), ("SUN", "SUN"), ("Places", "Places"), ("Textures", "dtd")):
        assert f"\nconfig.ood_datasets.{name}: image folder not found at {tmp_path / folder}" in out.stderr


def test_training_names_its_missing_training_set_with_the_evaluation_sets(tmp_path):
    """A training run refused a missing training set alone, and named the ID and OOD sets missing beside it only in
    its next run. The paper config's ImageNet train and validation splits are one dataset, named once."""
    from conftest import load_config

    from jaxood import train
    from jaxood.data.sources import DatasetMissing

    config = load_config("sot_glp", "paper", **{"train_dataset.data_dir": str(tmp_path), "ood_root": str(tmp_path)})
    config.id_dataset.data_dir = str(tmp_path)
    with pytest.raises(DatasetMissing) as err:
        train.train(config, str(tmp_path / "run"))
    lines = str(err.value).splitlines()
    assert lines[:2] == [
        "6 of the 6 datasets are missing:",
        f"config.train_dataset, config.id_dataset: TFDS dataset 'imagenet2012' is not prepared in {tmp_path}: "
        f"download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org into "
        f"{tmp_path / 'downloads' / 'manual'}, then run `python -m jaxood.data.prepare --dataset=imagenet2012 "
        f"--data_dir={tmp_path}` (needs network and `pip install tensorflow-cpu` once). If it is prepared in another "
        "folder, give that as the dataset's data_dir or as TFDS_DATA_DIR",
    ]
    assert [line.split(":")[0] for line in lines[2:]] == [
        f"config.ood_datasets.{name}" for name in ("iNaturalist", "SUN", "Places", "Textures")
    ]


def test_score_names_ignore_spaces_and_repeats():
    """ "mcm, gl_mcm" was refused as an unknown score ' gl_mcm'; a repeated name made its row twice."""
    from conftest import load_config

    from jaxood.evaluate import zero_shot_score_names

    assert zero_shot_score_names(load_config("zeroshot", "toy", scores=" mcm, gl_mcm,mcm ,")) == ("mcm", "gl_mcm")


@pytest.mark.parametrize(
    "scores, message",
    [
        ("mcm,glmcm", "config.scores names an unknown score 'glmcm' (did you mean 'gl_mcm'?); the zero-shot scores: "
         "'mcm', 'gl_mcm', 'max_logit', 'msp', 'energy', 'neglabel', 'csp', 'odin' and 'iodin'"),
        ("MCM,knn,i-odin", "config.scores names unknown scores 'MCM' (did you mean 'mcm'?), 'knn' and 'i-odin' (did "
         "you mean 'iodin'?); the zero-shot scores: 'mcm', "),
    ],
)  # fmt: skip
def test_an_unknown_score_is_named_with_the_nearest(scores, message):
    """An unknown score was named in a sorted list with every zero-shot score after it, and no nearest one, where a
    setting with a few choices is answered with its nearest (`errors.not_one_of`)."""
    from conftest import load_config

    from jaxood.errors import InvalidInput
    from jaxood.evaluate import zero_shot_score_names

    with pytest.raises(InvalidInput) as raised:
        zero_shot_score_names(load_config("zeroshot", "toy", scores=scores))
    assert str(raised.value).startswith(message)


def test_compute_results_uses_masked_scores_only():
    from jaxood.evaluate import Scorer, compute_results

    scorer = Scorer(fn=lambda args, images: {}, args=(), rows=("m / s",))
    id_out = {
        "m / s": np.array([0.9, 0.8, 0.7]),
        "pred/m": np.array([0, 1, 1]),
        "label": np.array([0, 1, 0]),
        "unreadable": 0,
    }
    ood = {"a": {"m / s": np.array([0.1, 0.75]), "label": np.array([-1, -1]), "unreadable": 1}}
    res = compute_results(scorer, id_out, ood)
    assert res["id_accuracy"] == {"m": pytest.approx(2 / 3)}
    assert res["ood"]["m / s"]["a"] == metrics.ood_metrics([0.9, 0.8, 0.7], [0.1, 0.75])
    assert res["unreadable"] == {"id": 0, "a": 1}


def test_id_accuracy_over_the_labelled_images_is_said_with_their_count():
    """An ID image list whose lines partly lack a label (-1) gave its ID accuracy over the labelled ones alone, in a
    table headed by all the ID images, unsaid."""
    from jaxood import report
    from jaxood.evaluate import Scorer, compute_results

    scorer = Scorer(fn=lambda args, images: {}, args=(), rows=("m / s",))
    id_out = {"m / s": np.array([0.9, 0.8, 0.7]), "pred/m": np.array([0, 1, 1]), "unreadable": 0}
    ood = {"a": {"m / s": np.array([0.1, 0.75]), "label": np.array([-1, -1]), "unreadable": 0}}
    res = compute_results(scorer, {**id_out, "label": np.array([0, -1, 0])}, ood)
    assert res["id_accuracy"] == {"m": 0.5} and res["id_labelled"] == 2
    note = "ID accuracy is over the 2 ID images with a label, of 3 (the others have none, as an image list's lines"
    assert f"{note} without one); the OOD metrics use all of them\n" in report.markdown(res)
    # Without an OOD set (few-shot classification) the short report says the same, and its undecodable images.
    alone = compute_results(scorer, {**id_out, "label": np.array([0, -1, 0]), "unreadable": 2}, {})
    assert report.markdown(alone) == (
        "ID examples: 3; OOD: none\n\nNo OOD set (config.ood_datasets names none). ID accuracy (%): m 50.00\n\n"
        f"Undecodable images skipped: id 2\n\n{note} without one)\n"
    )
    res = compute_results(scorer, {**id_out, "label": np.array([0, 1, 0])}, ood)
    assert res["id_labelled"] == 3 and "with a label" not in report.markdown(res)


def test_tied_id_and_ood_scores_are_counted_and_said_where_they_move_auroc():
    """A score that saturates (MCM at temperature 0.01 on the toy world: 15 % of the (ID, near) pairs at one value,
    the same float32 1.0) ties ID and OOD images, which AUROC counts half: the table gave its figure as if exact.
    The results count the tied pairs per row and set, and the report says how far AUROC could move, from 0.1 % of
    the pairs (0.05 points)."""
    from jaxood import report
    from jaxood.evaluate import Scorer, compute_results

    rows = ("m / saturated", "m / one", "m / none")
    scorer = Scorer(fn=lambda args, images: {}, args=(), rows=rows)
    ids = np.r_[np.ones(10), np.linspace(0.1, 0.9, 990)]  # 10 ID images at 1
    below = np.linspace(0.0, 0.05, 1000)  # no ID score among them
    ood_scores = {
        "m / saturated": np.r_[np.ones(200), below[200:]],
        "m / one": np.r_[1.0, below[1:]],
        "m / none": below,
    }
    id_out = {**dict.fromkeys(rows, ids), "pred/m": np.zeros(1000, int), "label": np.zeros(1000, int), "unreadable": 0}
    ood = {"a": {**ood_scores, "label": -np.ones(1000, int), "unreadable": 0}}
    res = compute_results(scorer, id_out, ood)
    assert res["tied_pairs"] == {"m / saturated": {"a": 10 * 200 / 1e6}, "m / one": {"a": 10 / 1e6}}
    md = report.markdown(res)
    assert (
        "m / saturated: equal ID and OOD scores (of the pairs: a 0.20 %), which AUROC counts half and FPR95 as false "
        "positives: its AUROC could be up to 0.10 points higher or lower had the score told them apart"
    ) in md
    assert "m / one:" not in md  # 0.001 % of the pairs: AUROC moves by 0.0005 points at most


def test_openood_near_and_far_averages_are_reported_beside_the_average_of_all(tmp_path):
    """OpenOOD v1.5 reports near-OOD (SSB-hard, NINCO) and far-OOD averages: the report had only the average of all
    five sets, which no OpenOOD table has. A group that named a set twice weighed it twice in its average."""
    from conftest import load_config

    from jaxood import report
    from jaxood.errors import InvalidInput
    from jaxood.evaluate import Scorer, compute_results, ood_groups

    config = load_config("zeroshot", "imagenet,openood_v15")
    # The sets in the papers' order, as the tables show them (ConfigDict sorts its keys unless told not to).
    assert list(config.ood_datasets) == ["SSB-hard", "NINCO", "iNaturalist", "Textures", "OpenImage-O"]
    assert list(load_config("zeroshot").ood_datasets) == ["iNaturalist", "SUN", "Places", "Textures"]
    groups = ood_groups(config)
    assert groups == {"near": ("SSB-hard", "NINCO"), "far": ("iNaturalist", "Textures", "OpenImage-O")}
    rng = np.random.RandomState(0)
    id_out = {"m / s": rng.rand(50) + 0.5, "pred/m": np.zeros(50, int), "label": np.zeros(50, int), "unreadable": 0}
    shift = {"SSB-hard": 0.4, "NINCO": 0.3, "iNaturalist": 0.1, "Textures": 0.0, "OpenImage-O": 0.2}
    ood = {s: {"m / s": rng.rand(40) + d, "label": -np.ones(40, int), "unreadable": 0} for s, d in shift.items()}
    res = compute_results(Scorer(fn=lambda args, images: {}, args=(), rows=("m / s",)), id_out, ood, groups)
    per_set = {s: metrics.ood_metrics(id_out["m / s"], ood[s]["m / s"]) for s in shift}
    near, far = res["ood_groups"]["near"], res["ood_groups"]["far"]
    assert near["sets"] == ["SSB-hard", "NINCO"] and far["sets"] == ["iNaturalist", "Textures", "OpenImage-O"]
    assert near["mean"]["m / s"]["auroc"] == pytest.approx(np.mean([per_set[s]["auroc"] for s in near["sets"]]))
    assert far["mean"]["m / s"]["fpr95"] == pytest.approx(np.mean([per_set[s]["fpr95"] for s in far["sets"]]))
    row = next(line for line in report.markdown(res).splitlines() if line.startswith("| m / s | "))
    cells = [float(c) for c in row.split(" | ")[2:-1] + [row.split(" | ")[-1].rstrip(" |")]]
    expected = [m for s in shift for m in (per_set[s]["fpr95"], per_set[s]["auroc"])]
    expected += [near["mean"]["m / s"]["fpr95"], near["mean"]["m / s"]["auroc"]]
    expected += [far["mean"]["m / s"]["fpr95"], far["mean"]["m / s"]["auroc"]]
    expected += [res["ood"]["m / s"]["mean"]["fpr95"], res["ood"]["m / s"]["mean"]["auroc"]]
    assert cells == pytest.approx([round(100 * e, 2) for e in expected], abs=1e-9)
    assert "| Method / score | ID acc | SSB-hard FPR95 | SSB-hard AUROC | " in report.markdown(res)
    assert " | near avg FPR95 | near avg AUROC | far avg FPR95 | far avg AUROC | Avg FPR95 | Avg AUROC |" in (
        report.markdown(res)
    )
    # A group naming a set the config does not have is refused before work.
    config.ood_groups.near = "SSB-hard,NINC0"
    with pytest.raises(InvalidInput, match=r"ood_groups\.near names NINC0: each group names one or more of the OOD"):
        ood_groups(config)
    # One named twice was weighed twice in the group's average, silently.
    config.ood_groups.near = "SSB-hard,NINCO,SSB-hard"
    with pytest.raises(InvalidInput, match=r"ood_groups\.near names SSB-hard more than once \(SSB-hard, NINCO, SSB-h"):
        ood_groups(config)
    # OOD sets replaced on the command line leave the benchmark's groups naming the old ones: the way on is said.
    config.ood_datasets = {"x": {"kind": "folder", "root": "/data/x"}}
    hint = "OOD sets, x (OOD sets given on the command line need their groups given too, --config.ood_groups="
    with pytest.raises(
        InvalidInput, match=re.escape(hint + "\"{'near': 'A,B'}\", or none: --config.ood_groups=\"{}\")")
    ):
        ood_groups(config)
    config.ood_groups = {}
    assert ood_groups(config) == {}


def test_report_without_score_rows_shows_the_id_accuracy():
    """An empty config.scores with a method that has no score of its own (CLIP pretraining) failed with an
    IndexError after the whole evaluation (and after pretraining, before its export)."""
    from jaxood import report
    from jaxood.evaluate import Scorer, compute_results

    id_out = {"pred/zero-shot": np.array([0, 1, 1, 1]), "label": np.array([0, 1, 0, 1]), "unreadable": 0}
    ood = {"far": {"label": -np.ones(3, int), "unreadable": 0}, "near": {"label": -np.ones(2, int), "unreadable": 0}}
    md = report.markdown(compute_results(Scorer(fn=lambda args, images: {}, args=(), rows=()), id_out, ood))
    assert md == (
        "ID examples: 4; OOD: far 3, near 2\n\nNo score rows (config.scores names none). ID accuracy (%): "
        "zero-shot 75.00\n"
    )


def test_without_a_score_row_the_ood_sets_are_not_read(tmp_path, capsys):
    """An empty config.scores (no score row) read every OOD set's images for a report of the ID accuracy alone, and
    refused the run where one was missing (a CLIP's zero-shot accuracy on ImageNet asked for the MOS sets)."""
    from conftest import load_config

    from jaxood.evaluate import evaluate

    config = load_config("zeroshot", "toy", scores="", cache_dir=str(tmp_path / "cache"))
    config.id_dataset.per_class = 2
    config.ood_datasets.gone = {"kind": "folder", "root": str(tmp_path / "gone")}
    results = evaluate(config, str(tmp_path / "run"))
    assert results["counts"] == {"id": 24} and results["ood"] == {} and results["id_accuracy"]["zero-shot"] >= 0
    out = capsys.readouterr().out
    assert (
        "config.scores names no score, so the OOD sets (near, far, spurious, gone) are not read: the report gives "
        "the ID accuracy alone\n"
    ) in out
    assert "ID examples: 24; OOD: none\n\nNo score rows (config.scores names none). ID accuracy (%): zero-shot" in out
    assert "[near]" not in out
    assert sorted(np.load(tmp_path / "run" / "scores.npz")) == ["id/index", "id/label", "id/pred/zero-shot"]


def test_a_report_stopped_as_it_is_written_leaves_none_of_it_cut_short(tmp_path):
    """results.json was written in place: a stop (Ctrl-C, SIGTERM: raised wherever the writing is) or a full disk
    midway left it cut short, a report `jaxood.summarize` cannot read. results.md is written first, results.json
    (the report's mark) last, each whole."""
    from jaxood import report

    class StoppedHere:
        def __str__(self):
            raise KeyboardInterrupt

    results = {"ood": {}, "counts": {"id": 3}, "id_accuracy": {"zero-shot": 0.5}, "config": {"x": StoppedHere()}}
    with pytest.raises(KeyboardInterrupt):
        report.write(str(tmp_path), results)
    assert os.listdir(tmp_path) == ["results.md"]
    results["config"]["x"] = "written"
    report.write(str(tmp_path), results)
    assert json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["config"] == {"x": "written"}


def test_without_an_ood_set_the_report_is_the_id_accuracy_alone(tmp_path):
    """SOT-GLP's first objective is few-shot classification (its Table 1: 11 datasets, accuracy alone), but a run
    without an OOD set was refused before work ("names no OOD set: name at least one"). Now `ood_datasets` may be
    empty: the report gives each method's ID accuracy, the same as with an OOD set, and no plot."""
    from conftest import load_config

    from jaxood import metric_log
    from jaxood.evaluate import evaluate

    config = load_config("zeroshot", "toy", scores="mcm,max_logit", cache_dir=str(tmp_path / "cache"))
    config.id_dataset.per_class = 4
    config.ood_datasets = {"far": {"kind": "toy", "split": "far_ood", "per_class": 2, "size": 64, "seed": 1}}
    config.ood_groups = {}
    with_ood = evaluate(config, str(tmp_path / "with"))
    config.ood_datasets = {}
    alone = evaluate(config, str(tmp_path / "alone"))
    assert alone["id_accuracy"] == with_ood["id_accuracy"] and alone["counts"] == {"id": 48}
    assert alone["ood"] == {"zero-shot / MCM": {"mean": None}, "zero-shot / MaxLogit": {"mean": None}}
    md = (tmp_path / "alone" / "results.md").read_text(encoding="utf-8")
    accuracy = f"{100 * with_ood['id_accuracy']['zero-shot']:.2f}"
    no_set = "No OOD set (config.ood_datasets names none)"
    assert f"ID examples: 48; OOD: none\n\n{no_set}. ID accuracy (%): zero-shot {accuracy}\n" in md
    assert not glob.glob(str(tmp_path / "alone" / "*.png")) and glob.glob(str(tmp_path / "with" / "*.png"))
    assert len(np.load(tmp_path / "alone" / "scores.npz")["id/zero-shot / MCM"]) == 48
    metric_log.write_evaluation(str(tmp_path / "alone"), 3, alone)  # a training run's figures: the accuracy alone
    assert os.listdir(tmp_path / "alone" / "tb" / "eval")


def _jaxood_checkout(clone):
    """A git repository at `clone` with one commit of an empty jaxood/__init__.py and a setup.cfg: a `git` that runs
    a command in it, and that commit."""
    git = functools.partial(subprocess.run, capture_output=True, check=True, cwd=clone)
    (clone / "jaxood").mkdir(parents=True)
    (clone / "jaxood" / "__init__.py").write_text("", encoding="utf-8")
    (clone / "setup.cfg").write_text("[metadata]\n", encoding="utf-8")
    git(["git", "init", "-q"])
    git(["git", "add", "jaxood", "setup.cfg"])
    git(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false", "commit",
         "-qm", "one"])  # fmt: skip
    return git, git(["git", "rev-parse", "HEAD"]).stdout.decode().strip()


@pytest.mark.skipif(not shutil.which("git"), reason="needs git")
def test_a_report_names_the_git_commit_of_the_jaxood_that_computed_it(tmp_path, monkeypatch):
    """results.json named jaxood's version, 0.1.0 at every commit, so two reports could not be told apart by the
    code that computed them. A checkout of jaxood gives its commit, whether files changed since and a hash of their
    paths and bytes (two edits of one commit differ), new files of the package included; a copy held in another
    project's repository (site-packages in a home folder under git) and a folder outside any, none. The checkout's
    path is not ASCII here."""
    import hashlib

    from jaxood import report

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above tmp_path is looked into
    clone = tmp_path / "cl\u00f4ne"
    git, commit = _jaxood_checkout(clone)
    package = str(clone / "jaxood")
    assert report.source(package) == {"commit": commit, "dirty": False, "diff": None}
    (clone / "runs").mkdir()  # what git does not track (a workdir) is no change
    (clone / "runs" / "results.json").write_text("{}", encoding="utf-8")
    (clone / ".gitignore").write_text("__pycache__/\n", encoding="utf-8")
    (clone / "jaxood" / "__pycache__").mkdir()  # nor what it ignores in the package
    (clone / "jaxood" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert report.source(package) == {"commit": commit, "dirty": False, "diff": None}
    # A new module not yet added to git was no change either: two versions of it gave one report's code.
    (clone / "jaxood" / "gone").symlink_to(clone / "nowhere")  # a link to nothing: its path alone
    news = []
    for text in ("Y = 1\n", "Y = 2\n"):
        (clone / "jaxood" / "new.py").write_text(text, encoding="utf-8")
        new = hashlib.sha256(b"jaxood/gone\0\0jaxood/new.py\0" + text.encode() + b"\0").hexdigest()[:16]
        assert report.source(package) == {"commit": commit, "dirty": True, "diff": new}
        news.append(new)
    assert news[0] != news[1]
    (clone / "jaxood" / "gone").unlink()
    (clone / "jaxood" / "new.py").unlink()
    diffs = []
    for text in ("X = 1\n", "X = 2\n"):  # a tracked file changed: its path and bytes
        (clone / "jaxood" / "__init__.py").write_text(text, encoding="utf-8")
        diff = hashlib.sha256(b"jaxood/__init__.py\0" + text.encode() + b"\0").hexdigest()[:16]
        assert report.source(package) == {"commit": commit, "dirty": True, "diff": diff}
        diffs.append(diff)
    assert diffs[0] != diffs[1]
    # A tracked file outside the package deleted: its path alone. The hash was of `git diff`'s output, whose form
    # git's settings change: another machine's settings gave the same changes another hash.
    (clone / "setup.cfg").unlink()
    (tmp_path / "order").write_text("setup.cfg\njaxood/*\n", encoding="utf-8")
    settings = {"diff.noprefix": "true", "diff.relative": "true", "diff.orderFile": str(tmp_path / "order"),
                "diff.context": "1", "diff.algorithm": "histogram"}  # fmt: skip
    deleted = hashlib.sha256(b"jaxood/__init__.py\0X = 2\n\0setup.cfg\0\0").hexdigest()[:16]
    assert report.source(package) == {"commit": commit, "dirty": True, "diff": deleted}
    with monkeypatch.context() as env:
        for i, (key, value) in enumerate(settings.items()):
            env.setenv(f"GIT_CONFIG_KEY_{i}", key)
            env.setenv(f"GIT_CONFIG_VALUE_{i}", value)
        env.setenv("GIT_CONFIG_COUNT", str(len(settings)))
        assert report.source(package) == {"commit": commit, "dirty": True, "diff": deleted}
    git(["git", "checkout", "setup.cfg"])
    (clone / "lib" / "jaxood").mkdir(parents=True)  # an installed copy inside another repository
    assert report.source(str(clone / "lib" / "jaxood")) is None
    (tmp_path / "wheel" / "jaxood").mkdir(parents=True)
    assert report.source(str(tmp_path / "wheel" / "jaxood")) is None
    # A copy without git's history that a launcher gave the checkout's source (launch/tpu_pod.sh's workers)
    launched = {"commit": "f" * 40, "dirty": False, "diff": None}
    monkeypatch.setenv("JAXOOD_SOURCE", json.dumps(launched))
    assert report.source(str(tmp_path / "wheel" / "jaxood")) == launched
    assert report.source(package) == {"commit": commit, "dirty": True, "diff": diffs[1]}  # git's, where it is one
    for given in ("", "{", '{"commit": "x"}', "[]"):  # none, or not a source: none
        monkeypatch.setenv("JAXOOD_SOURCE", given)
        assert report.source(str(tmp_path / "wheel" / "jaxood")) is None
    res = {"counts": {"id": 4, "far": 3}, "ood": {}, "id_accuracy": {"zero-shot": 0.5}}
    assert report.markdown(res) == report.tables(res)  # no source: the tables alone
    res["source"] = {"commit": commit, "dirty": False, "diff": None}
    assert report.markdown(res) == report.tables(res) + f"\nComputed by jaxood at git commit {commit}\n"
    res["source"] = {"commit": commit, "dirty": True, "diff": diffs[1]}
    assert report.markdown(res).endswith(
        f"\nComputed by jaxood at git commit {commit}, with uncommitted changes (diff {diffs[1]})\n"
    )


def test_the_report_gives_the_accuracy_of_predictions_without_a_score_row():
    """SOT-GLP's global and local branches predict too (the released code reports both accuracies); no score row
    is theirs, so the ID acc column cannot show them: a line under the table does."""
    from jaxood import report

    m = {"fpr95": 0.25, "auroc": 0.75, "aupr_in": 0.5, "aupr_out": 0.5}
    res = {
        "counts": {"id": 4, "far": 3},
        "ood": {"SOT-GLP / GL-MCM": {"far": m, "mean": m}},
        "id_accuracy": {"SOT-GLP": 0.75, "SOT-GLP global": 0.5, "SOT-GLP local": None},
    }
    assert (
        "| SOT-GLP / GL-MCM | 75.00 | 25.00 | 75.00 | 25.00 | 75.00 |\n\nID accuracy (%) of the predictions without "
        "a score row: SOT-GLP global 50.00, SOT-GLP local n/a\n\nAUPR-In / AUPR-Out (%)\n"
    ) in report.tables(res)
    del res["id_accuracy"]["SOT-GLP global"], res["id_accuracy"]["SOT-GLP local"]
    assert "without a score row" not in report.tables(res)


def test_training_curves_plot_every_logged_scalar(tmp_path):
    from PIL import Image

    from jaxood import report

    assert (
        report.training_curves(str(tmp_path), []) is None
        and report.training_curves(str(tmp_path), [{"step": 1}]) is None
    )
    records = [{"step": s, "loss": 1 / s, "lr": 0.1, **({"eval": 0.5} if s % 2 else {})} for s in range(1, 11)]
    path = report.training_curves(str(tmp_path), records)
    assert path == str(tmp_path / "training_curves.png")
    width, height = Image.open(path).size
    # 3 panels of 3.6 x 2.8 inches at 90 dpi in one row: 2.8 x 90 is 251.99999999999997 in floats, which matplotlib
    # 3.11.2 rounds to 252 pixels, and 3.7.0 to 3.11.0 (the versions tried) cut to 251
    assert width == 3 * 324 and height in (251, 252)


def test_a_plot_stopped_as_it_is_saved_is_the_one_saved_before(tmp_path, monkeypatch):
    """The plots and training_curves.png were saved in place (`savefig` on the path): a stop (Ctrl-C, SIGTERM: raised
    wherever the saving is) or a full disk midway left a PNG cut short where a whole one had been. Each is saved
    whole; a stop midway, played here in matplotlib's writing after its first bytes, leaves the one before."""
    import matplotlib.figure

    from jaxood import report

    records = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]
    ids, ood = np.array([0.9, 0.8, 0.7], np.float32), np.array([0.1, 0.75, 0.2], np.float32)
    table = {"m / s": {"a": metrics.ood_metrics(ids, ood)}}
    saved = [
        report.training_curves(str(tmp_path), records),
        *report.plots(str(tmp_path), table, {"m / s": ids}, {"a": {"m / s": ood}}),
    ]
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert sorted(before) == sorted(os.path.basename(path) for path in saved) and len(before) == 3
    whole = matplotlib.figure.Figure.savefig

    def stopped_midway(fig, fname, **kwargs):
        whole(fig, png := io.BytesIO(), **{"format": "png", **kwargs})
        with contextlib.nullcontext(fname) if hasattr(fname, "write") else open(fname, "wb") as f:
            f.write(png.getvalue()[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", stopped_midway)
    with pytest.raises(KeyboardInterrupt):
        report.training_curves(str(tmp_path), [*records, {"step": 3, "loss": 0.25}])
    with pytest.raises(KeyboardInterrupt):
        report.plots(str(tmp_path), table, {"m / s": ids}, {"a": {"m / s": ood[::-1]}})
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before


def test_plots_of_saturated_scores_are_drawn(tmp_path):
    """MCM at a small temperature (1e-6: a softmax saturated at 1) gives float32 scores an ulp apart, which NumPy
    cannot bin 40 ways in float32: the evaluation stopped with its traceback after writing results.json, before
    printing the table."""
    from jaxood import report

    one, below = np.float32(1.0), np.nextafter(np.float32(1.0), np.float32(0.0))
    ids, ood = np.array([one, one, below], np.float32), np.array([below, below, one], np.float32)
    table = {"m / s": {"a": metrics.ood_metrics(ids, ood)}}
    written = report.plots(str(tmp_path), table, {"m / s": ids}, {"a": {"m / s": ood}})
    assert sorted(os.path.basename(p) for p in written) == ["hist_m_s.png", "roc_m_s.png"]


@pytest.mark.skipif(not shutil.which("git"), reason="needs git")
def test_a_checkout_git_will_not_read_as_another_users_is_said_once_with_the_fix(tmp_path, monkeypatch, capsys):
    """git refuses a repository another user owns ("dubious ownership": a checkout mounted into a container, a lab's
    shared one): the reports named no commit, and nothing said why. It is said once a process, with git's own fix,
    which then works. git's test switch GIT_TEST_ASSUME_DIFFERENT_OWNER stands for the other owner."""
    from jaxood import report

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # where the fix writes git's global config
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    clone = tmp_path / "clone"
    commit = _jaxood_checkout(clone)[1]
    (tmp_path / "wheel" / "jaxood").mkdir(parents=True)
    monkeypatch.setenv("GIT_TEST_ASSUME_DIFFERENT_OWNER", "1")
    report._say_untrusted.cache_clear()
    capsys.readouterr()
    assert report.source(str(tmp_path / "wheel" / "jaxood")) is None  # no checkout: nothing to say
    launched = {"commit": "f" * 40, "dirty": False, "diff": None}
    monkeypatch.setenv("JAXOOD_SOURCE", json.dumps(launched))
    assert report.source(str(clone / "jaxood")) == launched  # the launcher's answer stands: nothing to say
    assert capsys.readouterr().out == ""
    monkeypatch.delenv("JAXOOD_SOURCE")
    assert report.source(str(clone / "jaxood")) is None
    assert report.source(str(clone / "jaxood")) is None  # a training run's start, then its evaluation
    fix = f"git config --global --add safe.directory {clone}"
    assert capsys.readouterr().out == (
        f"note: git will not read jaxood's checkout {clone}, which another user owns (git's safe.directory check), "
        f"so the reports name no commit. To let it: {fix}\n"
    )
    subprocess.run(fix.split(), check=True)
    assert report.source(str(clone / "jaxood")) == {"commit": commit, "dirty": False, "diff": None}


def test_histogram_legends_cover_no_bars(tmp_path, monkeypatch):
    """Each histogram panel's legend lies below its plotting area: inside it, matplotlib's "best" place still covered
    bars or the 95% TPR line (the demo's far and spurious panels), and its search for that place warned that it "can
    be slow" where it took over a second on a loaded machine."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from jaxood import report

    figures = []  # each figure plots() closes, kept open to measure it; matplotlib 3.7 closes "all" to switch backend
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig) if isinstance(fig, Figure) else None)
    rng = np.random.default_rng(0)
    ids, ood = rng.normal(1.0, 0.3, 300), {s: {"m / s": rng.normal(0.0, 0.3, 200)} for s in ("near", "far")}
    table = {"m / s": {s: metrics.ood_metrics(ids, ood[s]["m / s"]) for s in ood}}
    report.plots(str(tmp_path), table, {"m / s": ids}, ood)
    hist = figures[0]
    renderer = hist.canvas.get_renderer()
    for ax in hist.axes:
        legend, area = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
        assert legend.y1 < area.y0, (ax.get_title(), legend, area)
    monkeypatch.undo()
    plt.close("all")


def test_nan_scores_leave_only_their_metrics_out():
    """A NaN score has no rank (ranking it anyway gave a number with no meaning): the metrics it touches are None
    (a NaN in ID: every set's), counted per row and set; the other sets, the means without NaN, and the other rows
    are the metrics of their scores."""
    from jaxood.evaluate import Scorer, compute_results

    scorer = Scorer(fn=lambda args, images: {}, args=(), rows=("m / ok", "m / bad_ood", "m / bad_id"))
    ok_id, a, b = np.array([0.9, 0.8, 0.7, 0.6]), np.array([0.1, 0.75]), np.array([0.65, 0.2, 0.3])
    id_out = {"m / ok": ok_id, "m / bad_ood": ok_id, "m / bad_id": np.r_[ok_id[:3], np.nan]}
    id_out.update({"pred/m": np.zeros(4, int), "label": np.zeros(4, int), "unreadable": 0})
    ood = {
        "a": {"m / ok": a, "m / bad_ood": a, "m / bad_id": a, "label": -np.ones(2, int), "unreadable": 0},
        "b": {"m / ok": b, "m / bad_ood": np.r_[np.nan, b[1:]], "m / bad_id": b, "label": -np.ones(3), "unreadable": 0},
    }
    res = compute_results(scorer, id_out, ood)
    assert res["nan_scores"] == {"m / bad_ood": {"b": 1}, "m / bad_id": {"id": 1}}
    table = res["ood"]
    assert table["m / ok"]["b"] == metrics.ood_metrics(ok_id, b) and table["m / ok"]["mean"] is not None
    assert table["m / bad_ood"]["a"] == table["m / ok"]["a"] == metrics.ood_metrics(ok_id, a)
    assert table["m / bad_ood"]["b"] is None and table["m / bad_ood"]["mean"] is None
    assert all(table["m / bad_id"][s] is None for s in ("a", "b", "mean"))
    with pytest.raises(ValueError, match="NaN scores have no rank: 1 ID and 0 OOD"):
        metrics.ood_metrics(id_out["m / bad_id"], a)


def test_nan_scores_are_reported_in_the_table_plots_and_log(tiny_hf, tmp_path, capsys):
    """An evaluation whose scores are NaN for some images writes its whole report: NaN cells and a note naming the
    row and the counts in results.md, null in results.json, every plot, and a log line with what to check."""
    import jax.numpy as jnp
    from conftest import load_config

    from jaxood import evaluate
    from jaxood.models import clip

    config = load_config("zeroshot", "toy", eval_batch_size=8, **{"id_dataset.per_class": 2})
    for name in ("near", "far", "spurious"):
        config.ood_datasets[name].per_class = 1

    def fn(args, images):  # bright images score NaN, in every set
        brightness = images.mean(axis=(1, 2, 3))
        nan_if_bright = jnp.where(brightness > jnp.median(brightness), jnp.nan, brightness)
        return {"pred/m": jnp.zeros(len(images), int), "m / finite": brightness, "m / nan": nan_if_bright}

    model, params = clip.load(tiny_hf[0])
    results = evaluate.evaluate(
        config, str(tmp_path), model, params, scorer=evaluate.Scorer(fn, (), ("m / finite", "m / nan"))
    )
    assert set(results["nan_scores"]) == {"m / nan"} and results["nan_scores"]["m / nan"]["id"] > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["ood"]["m / nan"]["mean"] is None and saved["ood"]["m / finite"]["mean"]["auroc"] > 0
    md = (tmp_path / "results.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| m / nan | "))  # FPR95 / AUROC's table
    assert row.endswith(" | NaN | NaN | NaN | NaN | NaN | NaN | NaN | NaN |"), row  # 3 sets and the mean
    assert "m / nan: NaN scores (id " in md
    assert {f"{kind}_m_{row}.png" for kind in ("hist", "roc") for row in ("finite", "nan")} <= set(os.listdir(tmp_path))
    assert "[m / nan] NaN scores (id " in capsys.readouterr().out


def test_ood_sets_and_groups_given_as_dicts_keep_their_order():
    """A dict set over `ood_datasets` or `ood_groups`, in Python or on the command line
    (`--config.ood_datasets="{...}"`), becomes a ConfigDict that lists its keys sorted: the report's columns and
    groups came in alphabetical order, not in the order given."""
    from conftest import load_config

    from jaxood import evaluate

    config = load_config("zeroshot", "toy")
    near, far = config.ood_datasets.near.to_dict(), config.ood_datasets.far.to_dict()
    config.ood_datasets = {"zz_far": far, "aa_near": near}
    config.ood_groups = {"only_far": "zz_far", "all": "zz_far,aa_near"}
    assert list(config.ood_datasets) == ["aa_near", "zz_far"]  # as ml_collections lists them
    ood = evaluate.open_inputs(config).ood
    assert list(ood) == ["zz_far", "aa_near"]
    assert evaluate.ood_groups(config) == {"only_far": ("zz_far",), "all": ("zz_far", "aa_near")}
    assert list(evaluate.ood_groups(config)) == ["only_far", "all"]
    config.ood_groups = {"all": ["zz_far", "aa_near"]}  # a list, as --config.ood_groups="{'all': [...]}" gives it
    assert evaluate.ood_groups(config) == {"all": ("zz_far", "aa_near")}


def test_an_ood_set_of_undecodable_images_leaves_its_metrics_out_and_reports_the_rest(tiny_hf, tmp_path, capsys):
    """Every image of `far` undecodable: the evaluation used to stop at the metrics, after scoring every set."""
    import ml_collections
    from conftest import load_config

    from jaxood import evaluate

    (tmp_path / "broken" / "cls").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "broken" / "cls" / f"{i}.jpg").write_bytes(b"not a jpeg")
    config = load_config("zeroshot", "toy", scores="mcm", eval_batch_size=8, **{"id_dataset.per_class": 2})
    config.model, config.cache_dir = tiny_hf[0], str(tmp_path / "cache")
    config.ood_datasets.near.per_class = 1
    config.ood_datasets.far = ml_collections.ConfigDict({"kind": "folder", "root": str(tmp_path / "broken")})
    del config.ood_datasets["spurious"]
    config.ood_groups = ml_collections.ConfigDict({"close": "near", "all": "near,far"}, sort_keys=False)
    results = evaluate.evaluate(config, str(tmp_path / "run"))
    assert results["counts"]["far"] == 0 and results["unreadable"]["far"] == 3
    table = results["ood"]["zero-shot / MCM"]
    assert table["far"] is None and table["mean"] is None and table["near"]["auroc"] > 0
    groups = results["ood_groups"]  # a group's average is n/a with the set, and computed without it
    assert groups["close"]["mean"]["zero-shot / MCM"] == table["near"]
    assert groups["all"]["mean"]["zero-shot / MCM"] is None
    md = (tmp_path / "run" / "results.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| zero-shot / MCM | "))
    near = f"{100 * table['near']['fpr95']:.2f} | {100 * table['near']['auroc']:.2f}"
    assert row.endswith(f" | {near} | n/a | n/a | {near} | n/a | n/a | n/a | n/a |"), row  # near, far, close, all, Avg
    assert "No image scored in far: no metric against it (n/a), nor an average" in md
    assert {"hist_zero_shot_mcm.png", "roc_zero_shot_mcm.png"} <= set(os.listdir(tmp_path / "run"))
    assert "[far] no image of this set could be scored (3 undecodable)" in capsys.readouterr().out


def test_paths_starting_with_a_tilde_are_in_the_home_folder(tiny_hf, tmp_path, monkeypatch, capsys):
    """A shell leaves `--workdir=~/run` and `--config.model=~/clip` as they are (it expands `~` only at a word's
    start): the workdir became a folder named `~` in the current one, the model was refused as neither a folder nor a
    hub id, and a dataset under `~` was reported missing."""
    import ml_collections
    from conftest import load_config, write_image

    from jaxood import evaluate

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    shutil.copytree(tiny_hf[0], home / "clip")
    (home / "ood" / "things").mkdir(parents=True)
    for i in range(2):
        write_image(home / "ood" / "things" / f"{i}.png", seed=i)
    (home / "ood.txt").write_text("things/0.png\nthings/1.png\n")
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    config = load_config("zeroshot", "toy", scores="mcm", eval_batch_size=8, model="~/clip", plots=False)
    config.id_dataset.per_class, config.cache_dir = 1, "~/cache"
    config.ood_datasets = ml_collections.ConfigDict(
        {
            "folder": {"kind": "folder", "root": "~/ood"},
            "list": {"kind": "list", "root": "~/ood", "list_file": "~/ood.txt"},
        }
    )
    results = evaluate.evaluate(config, "~/run")
    assert results["counts"] == {"id": 12, "folder": 2, "list": 2}
    assert (home / "run" / "results.md").exists() and (home / "cache").is_dir() and not os.listdir(cwd)
    with np.load(home / "run" / "scores.npz") as scores:  # each example's file, under the home `~` named
        for name in ("folder", "list"):
            assert scores[f"{name}/path"].tolist() == [str(home / "ood" / "things" / f"{i}.png") for i in (0, 1)]
    assert capsys.readouterr().out.splitlines()[-1] == (  # no plots, and the folder where they are
        f"Report in {home / 'run'}: results.md (these tables), results.json and scores.npz (each example's scores)"
    )


@pytest.mark.parametrize(
    "error, fix",
    [
        (OSError(28, "No space left on device"), "Free space there"),
        (OSError(30, "Read-only file system"), "Make it writable"),
        (OSError(5, "Input/output error"), "Check it and the disk that holds it"),
    ],
)
def test_a_report_that_cannot_be_written_names_the_workdir_and_the_way_on(tiny_hf, tmp_path, monkeypatch, error, fix):
    """A full disk when the report is written, after the whole evaluation, ended in numpy's OSError traceback. A
    folder the file system refuses to write (read-only, permissions) is told to be made writable, not freed."""
    from conftest import load_config

    from jaxood import evaluate, report
    from jaxood.errors import NotSaved

    def full_disk(*args):
        raise error

    monkeypatch.setattr(report, "write_scores", full_disk)
    sets = ("id_dataset", "ood_datasets.near", "ood_datasets.far", "ood_datasets.spurious")
    config = load_config(
        "zeroshot", "toy", scores="mcm", eval_batch_size=8, plots=False, model=tiny_hf[0],
        cache_dir=str(tmp_path / "cache"), **{f"{name}.per_class": 1 for name in sets},
    )  # fmt: skip
    with pytest.raises(NotSaved, match=re.escape(
        f"the report could not be written in {tmp_path / 'run'} ({error.strerror}). {fix}, then run the same command "
        "again to evaluate again."
    )):  # fmt: skip
        evaluate.evaluate(config, str(tmp_path / "run"))


def test_no_decodable_id_image_leaves_every_metric_out():
    from jaxood import report
    from jaxood.evaluate import Scorer, compute_results

    none = np.zeros(0)
    id_out = {"m / x": none, "pred/m": none.astype(int), "label": none.astype(int), "unreadable": 4}
    ood = {"a": {"m / x": np.ones(3), "label": -np.ones(3, int), "unreadable": 0}}
    results = compute_results(Scorer(fn=lambda args, images: {}, args=(), rows=("m / x",)), id_out, ood)
    assert results["ood"]["m / x"] == {"a": None, "mean": None} and results["id_accuracy"] == {"m": None}
    md = report.markdown(results)
    assert "| m / x | n/a | n/a | n/a | n/a | n/a |" in md and md.endswith("\n\nNo ID image scored: no metric (n/a)\n")


def test_zero_shot_logit_scores_against_hf_clip_logits(tiny_hf, tmp_path):
    """The zero-shot MaxLogit, MSP and Energy rows against Hugging Face PyTorch CLIP's `logits_per_image`
    (`exp(logit_scale) cos`). MSP and Energy, the spec's post-hoc scores of any zero-shot model, were refused as
    unknown scores."""
    import torch
    from conftest import load_config

    from jaxood.evaluate import zero_shot_scorer
    from jaxood.models import clip
    from jaxood.models.tokenizer import tokenize

    model, params = clip.load(tiny_hf[0])
    config = load_config("zeroshot", "toy", scores="mcm,max_logit,msp,energy", cache_dir=str(tmp_path / "cache"))
    names = ["circle", "square", "red star"]
    scorer = zero_shot_scorer(config, model, params, names)
    assert scorer.rows == ("zero-shot / MCM", "zero-shot / MaxLogit", "zero-shot / MSP", "zero-shot / Energy")
    images = np.random.RandomState(3).randn(4, 32, 32, 3).astype(np.float32)
    got = {row.split(" / ")[1]: np.asarray(v) for row, v in scorer(images).items() if " / " in row}
    ids = torch.as_tensor(np.asarray(tokenize([config.mcm_template.format(n) for n in names])), dtype=torch.long)
    with torch.no_grad():
        ref = tiny_hf[1](input_ids=ids, pixel_values=torch.as_tensor(images.transpose(0, 3, 1, 2))).logits_per_image
    np.testing.assert_allclose(got["MaxLogit"], ref.max(-1).values.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["MSP"], ref.softmax(-1).max(-1).values.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["Energy"], ref.logsumexp(-1).numpy(), rtol=1e-4, atol=1e-4)


def test_zero_shot_odin_and_iodin_against_odins_own_steps_on_hf_clip(tiny_hf, tmp_path):
    """The zero-shot ODIN and i-ODIN rows against ODIN's code run on Hugging Face PyTorch CLIP: the cross-entropy of
    the logits at T with their arg max, its input gradient by torch's autograd, the images moved by `eps` against
    its sign divided by CLIP's per-channel std (every element, or for i-ODIN the one of largest |gradient|), then
    the max softmax at T. The spec's post-hoc scores of any zero-shot model were library functions only (refused
    in config.scores)."""
    import torch
    from conftest import load_config

    from jaxood.data.preprocess import CLIP_STD
    from jaxood.evaluate import zero_shot_scorer
    from jaxood.models import clip
    from jaxood.models.tokenizer import tokenize

    model, params = clip.load(tiny_hf[0])
    # Steps large enough to move the scores well past the tolerance (checked below): i-ODIN moves one element alone.
    t, eps, eps_i = 2.0, 0.05, 0.5
    config = load_config("zeroshot", "toy", scores="odin,iodin,msp", cache_dir=str(tmp_path / "cache"))
    config.odin.update({"temperature": t, "eps": eps})
    config.iodin.update({"temperature": t, "eps": eps_i})
    names = ["circle", "square", "red star"]
    scorer = zero_shot_scorer(config, model, params, names)
    assert scorer.rows == ("zero-shot / ODIN", "zero-shot / i-ODIN", "zero-shot / MSP")
    images = np.random.RandomState(4).randn(4, 32, 32, 3).astype(np.float32)
    got = {row.split(" / ")[1]: np.asarray(v) for row, v in scorer(images).items() if " / " in row}

    ids = torch.as_tensor(np.asarray(tokenize([config.mcm_template.format(n) for n in names])), dtype=torch.long)
    std = torch.as_tensor(CLIP_STD).view(1, 3, 1, 1)

    def logits(x):
        return tiny_hf[1](input_ids=ids, pixel_values=x).logits_per_image

    x = torch.as_tensor(images.transpose(0, 3, 1, 2)).requires_grad_(True)
    out = logits(x) / t
    torch.nn.functional.cross_entropy(out, out.argmax(-1), reduction="sum").backward()
    grad = x.grad
    with torch.no_grad():
        msp_at_t = logits(x).div(t).softmax(-1).max(-1).values.numpy()
        step = torch.where(grad >= 0, 1.0, -1.0) / std  # ODIN's code: (ge(grad, 0) - 0.5) * 2, each channel / std
        want_odin = logits(x - eps * step).div(t).softmax(-1).max(-1).values.numpy()
        top = grad.abs().reshape(len(x), -1).argmax(-1)
        one = torch.zeros_like(grad).reshape(len(x), -1)
        one[torch.arange(len(x)), top] = 1.0
        want_iodin = logits(x - eps_i * step * one.reshape(grad.shape)).div(t).softmax(-1).max(-1).values.numpy()
    np.testing.assert_allclose(got["ODIN"], want_odin, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["i-ODIN"], want_iodin, rtol=1e-4, atol=1e-5)
    assert np.abs(want_odin - msp_at_t).min() > 1e-3 and np.abs(want_iodin - msp_at_t).min() > 1e-3
    assert np.abs(want_iodin - want_odin).min() > 1e-3


@pytest.mark.parametrize("local_features", ["value", "vv"])
def test_zero_shot_gl_mcm_reads_gl_mcm_local_features_or_the_v_v_stream(tiny_hf, local_features):
    """Zero-shot GL-MCM's local term: GL-MCM's own local features by default (the papers' "CLIP (GL)" rows), or the
    V-V stream SOT-GLP reads; it read the V-V stream alone, so its ImageNet row was not GL-MCM's."""
    from conftest import load_config

    from jaxood.errors import InvalidInput
    from jaxood.evaluate import open_inputs, zero_shot_scorer
    from jaxood.models import clip
    from jaxood.models.tokenizer import tokenize
    from jaxood.scores import mcm

    model, params = clip.load(tiny_hf[0])
    config = load_config("zeroshot", "toy", scores="gl_mcm", cache_dir="")
    assert config.gl_mcm.local_features == "value"
    config.gl_mcm.local_features, config.gl_mcm.lambda_local = local_features, 0.5
    names = ["circle", "square", "star"]
    images = np.random.RandomState(4).randn(3, 32, 32, 3).astype(np.float32)
    got = zero_shot_scorer(config, model, params, names)(images)
    method = {"value": "encode_image_value_patches", "vv": "encode_image_dense"}[local_features]
    g, local = model.apply({"params": params}, images, method=method)
    prompts = tokenize([f"a photo of a {n}." for n in names])
    text = mcm.normalize(model.apply({"params": params}, prompts, method="encode_text"))
    want = mcm.gl_mcm(mcm.normalize(g) @ text.T, mcm.normalize(local) @ text.T, 0.5, 1.0)
    np.testing.assert_allclose(got["zero-shot / GL-MCM"], want, atol=1e-5)
    config.gl_mcm.local_features = "patch"
    with pytest.raises(
        InvalidInput, match=r"gl_mcm.local_features must be one of 'value' or 'vv', got 'patch': 'value' is GL-MC"
    ):
        open_inputs(config)


def test_zero_shot_scoring_and_text_encoding_keep_clip_on_device(tiny_hf, tmp_path):
    """CLIP goes to the devices once, not with every batch: scoring images and encoding prompts, with the
    inputs placed explicitly, make no implicit host-to-device transfer (a ViT-B/16 is 600 MB per batch)."""
    import jax
    from conftest import load_config

    from jaxood.evaluate import zero_shot_scorer
    from jaxood.models import clip
    from jaxood.text_features import encode_texts

    model, params = clip.load(tiny_hf[0])  # host arrays, as loaded
    config = load_config("zeroshot", "toy", scores="mcm,gl_mcm,max_logit", cache_dir="")
    scorer = zero_shot_scorer(config, model, params, ["circle", "square"])
    images = jax.device_put(np.random.RandomState(3).randn(4, 32, 32, 3).astype(np.float32))
    with jax.transfer_guard_host_to_device("disallow"):
        out = scorer(images)
        jax.block_until_ready(out)
        feats = encode_texts(model, params, ["a photo of a circle.", "a square"], batch_size=2)
    assert feats.shape == (2, model.cfg.projection_dim)


def test_text_encoding_split_over_four_devices_matches_one(tiny_hf, tmp_path):
    """Prompt batches are split over the devices (padded to a multiple of their number): each device does a
    quarter of the work (XLA's cost analysis) and the features are those of one device."""
    import textwrap

    from jaxood.models import clip
    from jaxood.text_features import encode_texts

    texts = [f"a photo of a {w}." for w in ("circle", "red square", "big blue star", "ring", "tiny green arrow")]
    script = textwrap.dedent(
        f"""
        import jax, numpy as np
        from jaxood.data.pipeline import data_mesh, replicate
        from jaxood.models import clip
        from jaxood.models.tokenizer import tokenize
        from jaxood.text_features import _encoder, encode_texts
        assert jax.device_count() == 4
        model, params = clip.load({str(tiny_hf[0])!r})
        np.save({str(tmp_path / "multi.npy")!r}, encode_texts(model, params, {texts!r}, batch_size=3))
        ids = clip.truncate_at_eot(tokenize({texts!r}[:4]))
        def flops(mesh):  # per device, of one prompt batch
            lowered = _encoder(model, mesh).lower(replicate(params, mesh), replicate(ids, mesh))
            return lowered.compile().cost_analysis()["flops"]
        one, four = flops(data_mesh(jax.devices()[:1])), flops(data_mesh())
        assert four < one / 3, (four, one)
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    model, params = clip.load(tiny_hf[0])
    np.testing.assert_allclose(
        np.load(tmp_path / "multi.npy"), encode_texts(model, params, texts), rtol=1e-5, atol=1e-5
    )


def test_text_features_are_cached_per_compute_dtype(tiny_hf, tmp_path):
    """A bfloat16 run's text features (config.dtype "auto" on an accelerator) were served to a float32 run of the same
    weights and prompts from the cache, so its NegLabel / MCM rows depended on what had run before."""
    import jax.numpy as jnp

    from jaxood.models import clip
    from jaxood.text_features import templated_features

    words, cache = ["dog", "cat", "tench"], str(tmp_path / "cache")
    by_dtype = {}
    for dtype in (jnp.bfloat16, jnp.float32, jnp.bfloat16):
        model, params = clip.load(tiny_hf[0], dtype=dtype)
        by_dtype.setdefault(dtype, []).append(templated_features(model, params, words, ["a photo of a {}."], cache))
    assert len(os.listdir(os.path.join(cache, "text_features"))) == 2
    np.testing.assert_array_equal(*by_dtype[jnp.bfloat16])  # the second bfloat16 run: its own cache file
    model, params = clip.load(tiny_hf[0])
    want = templated_features(model, params, words, ["a photo of a {}."], cache_dir="")  # not cached
    np.testing.assert_allclose(by_dtype[jnp.float32][0], want, rtol=1e-6, atol=1e-6)
    assert not np.allclose(by_dtype[jnp.bfloat16][0], want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("entry", ["train", "evaluate"])
@pytest.mark.parametrize(
    "key, value, message",
    [
        ("cache_dir", "gs://bucket/cache", "gs://bucket/cache' is a URL"),
        ("cache_dir", os.path.join(ROOT, "setup.cfg", "cache"), "is a file or a folder jaxood may not write"),
        ("scores", "mcm,glmcm", "'glmcm'"),
        ("mcm_template", "a photo of a {name}.", "needs exactly one {}"),
        ("ood_datasets", {"mean": {"kind": "toy", "split": "far_ood", "per_class": 1}}, r"an OOD set \['mean'\]"),
        ("ood_datasets", {"a|b": {"kind": "toy", "split": "far_ood", "per_class": 1}}, r": 'a\|b' holds '\|' or a"),
        ("ood_groups", {"far\nfar": "far"}, r"'far\\nfar' holds '\|' or a line break, which would split or end a row"),
        ("ood_datasets", {" ": {"kind": "toy", "split": "far_ood", "per_class": 1}}, r"a name of spaces alone \(' '\)"),
        ("ood_groups", {"": "far"}, r"a name of spaces alone \(''\) would title its column of results.md's table"),
        ("mcm.temperature", 0.0, r"mcm.temperature must be a number > 0, got 0.0"),
        ("mcm.temperature", float("inf"), r"mcm.temperature must be a finite number > 0, got inf"),
        ("dtype", "float64", "dtype must be one of 'auto', 'float32', 'bfloat16' or 'float16', got 'float64'"),
        ("gl_mcm.lambda_local", -1.0, r"gl_mcm.lambda_local must be a number >= 0, got -1.0"),
        ("neglabel.percent", 1.5, r"neglabel.percent must be a number > 0 and <= 1, got 1.5"),
        ("csp.percent", 0.0, r"csp.percent must be a number > 0 and <= 1, got 0.0"),
        ("neglabel.eta", 1.0, r"neglabel.eta must be a number >= 0 and < 1, got 1.0"),
        ("csp.n_groups", 0, r"csp.n_groups must be a whole number of at least 1, got 0"),
        ("odin.temperature", 0.0, r"odin.temperature must be a number > 0, got 0.0"),
        ("iodin.eps", -0.1, r"iodin.eps must be a number >= 0, got -0.1"),
        ("id_dataset.split", "near_ood", r"the ID set \(.*'near_ood'.*\) has no class names"),
        (
            "eval_batch_size",
            10**8,
            r"eval_batch_size 100000000: the loader holds 4 batches of 100000000 images of 64x64 on each host at "
            r"once, 18310.5 GiB, more than this host's [\d.]+ GiB of memory: lower eval_batch_size",
        ),
    ],
)
def test_bad_evaluation_setting_is_refused_before_work(entry, key, value, message, tmp_path, monkeypatch):
    """Evaluation reads these only at its end, after a whole training run: a gs:// text-feature cache used to become
    a local folder `gs:`, and a misspelt score or prompt template failed after training. A score's temperature of 0
    gave NaN scores, an infinite one the same score to every image, a NegLabel/CSP `percent` above 1 kept every
    candidate, silently; `percent` 0 or 0 groups failed after the candidates were encoded. An ID set without class
    names (a toy OOD split) failed at JAX's argmax of no class prompts. An eval batch larger than the host's memory
    failed with NumPy's "Unable to allocate" traceback as the ID set's first batch was read (jaxood.evaluate refuses
    it as its loader starts, before any image is read). An OOD set or group named with '|' split its column of
    results.md's tables; one named with spaces alone left its column untitled. Now nothing starts."""
    from conftest import load_config

    from jaxood.errors import InvalidInput
    from jaxood.evaluate import evaluate
    from jaxood.train import train

    monkeypatch.chdir(tmp_path)
    config = load_config("sot_glp" if entry == "train" else "zeroshot", "demo" if entry == "train" else "toy")
    *parents, last = key.split(".")
    functools.reduce(lambda c, k: c[k], parents, config)[last] = value
    with pytest.raises(InvalidInput, match=message):
        (train if entry == "train" else evaluate)(config, str(tmp_path / "run"))
    assert not (tmp_path / "gs:").exists()
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize(
    "entry, scores, message",
    [
        ("evaluate", "max_logit,mcm,msp", r"config\.id_dataset has one class \('dog'\), and MCM, MSP "
         r"\(config\.scores\) are a softmax over the ID classes: with one, every image scores 1 \(AUROC 50\)\. "
         r"Give the ID set its classes \(a folder: one sub-folder per class\), or score it with MaxLogit, Energy, "
         r"NegLabel or CSP alone"),
        ("evaluate", "max_logit,energy", None),
        ("evaluate", "iodin,energy", r"config\.id_dataset has one class \('dog'\), and i-ODIN \(config\.scores\) are "),
        ("train", "max_logit", r"config\.id_dataset has one class \('dog'\), and sot_glp learns to tell the ID "
         r"classes apart: with one, its loss is 0 from the first step\. Give the ID set its classes \(a folder: one "
         r"sub-folder per class\)$"),
        ("pretrain", "max_logit", None),  # it learns from captions: the ID classes are only for its zero-shot rows
    ],
)  # fmt: skip
def test_an_id_set_of_one_class_is_refused_where_it_makes_the_rows_constant(entry, scores, message, tmp_path):
    """An ID folder holding its images in one sub-folder gave MCM and GL-MCM rows of AUROC 50.00 and 100 % ID
    accuracy, silently: a softmax over one class is 1 for every image."""
    from conftest import load_config, write_image

    from jaxood.errors import InvalidInput
    from jaxood.evaluate import open_inputs

    (tmp_path / "one" / "dog").mkdir(parents=True)
    for i in range(2):
        write_image(tmp_path / "one" / "dog" / f"{i}.png", seed=i)
    from jaxood.train import train

    file_and_variant = {"evaluate": ("zeroshot", "toy"), "train": ("sot_glp", "demo"), "pretrain": ("toy_clip",)}
    config = load_config(*file_and_variant[entry])
    config.id_dataset = {"kind": "folder", "root": str(tmp_path / "one")}
    if entry == "train":  # trained on the same one class
        config.train_dataset = config.id_dataset
    config.scores = scores
    if message is None:
        assert open_inputs(config, train=entry == "pretrain").id.class_names == ("dog",)
    elif entry == "train":  # refused before any work
        with pytest.raises(InvalidInput, match=message):
            train(config, str(tmp_path / "run"))
        assert not (tmp_path / "run" / "checkpoints").exists()
    else:
        with pytest.raises(InvalidInput, match=message):
            open_inputs(config)


@pytest.mark.parametrize("entry", ["train", "evaluate"])
@pytest.mark.parametrize(
    "kind, settings, message",
    [
        # The toy config keeps 3000 candidates per word type, NegLabel 0.15 of each: 900 negatives.
        ("neglabel", {"n_groups": 901}, "neglabel.n_groups 901 needs a negative label per group, but neglabel keeps "
         r"at most 900 of its 6000 candidates \(neglabel.percent 0.15 of each word type's\): raise neglabel.percent"),
        ("neglabel", {"percent": 0.0001}, "neglabel.n_groups 1 needs a negative label per group, but neglabel keeps "
         "at most 0 of its 6000 candidates .*: raise neglabel.percent or neglabel.max_candidates \\(0: all\\)$"),
        ("csp", {"max_candidates": 30}, r"csp.n_groups 10 needs .* keeps at most 8 of its 60 candidates"),
    ],
)  # fmt: skip
def test_fewer_negative_labels_than_groups_are_refused_before_work(entry, kind, settings, message, tmp_path):
    """NegLabel / CSP with fewer negative labels than groups failed once the ~70k candidates were encoded, with
    group_negatives' bare ValueError; with none at all (a `percent` keeping no candidate) every image got the same
    score, and its row AUROC 50, silently."""
    from conftest import load_config

    from jaxood.errors import InvalidInput
    from jaxood.evaluate import evaluate
    from jaxood.train import train

    config = load_config("sot_glp" if entry == "train" else "zeroshot", "demo" if entry == "train" else "toy")
    config.scores = f"mcm,{kind}"
    config[kind].max_candidates = 3000
    config[kind].update(settings)
    with pytest.raises(InvalidInput, match=message):
        (train if entry == "train" else evaluate)(config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "results.json").exists()


def test_csp_keeping_fewer_negatives_than_groups_after_its_similarity_cut_is_named(tiny_hf, tmp_path):
    """CSP drops the candidates closer than `max_id_similarity` to an ID class before it keeps `percent`: how many
    remain is known once they are encoded. Too few for its groups failed with group_negatives' bare ValueError."""
    # NegLabel's row too: _evaluate sets its max_candidates, which a run without it would not read (refused)
    out = _evaluate(tmp_path / "run", tiny_hf[0], tmp_path / "c", "--config.scores=mcm,neglabel,csp",
                    "--config.csp.max_id_similarity=-1.0")  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]
    assert (
        "error: csp.n_groups 10 needs a negative label per group, but csp keeps 0 of its 300 candidates (csp.percent "
        "0.15 of each word type's, after csp.max_id_similarity -1.0 dropped those closer to an ID class): raise "
        "csp.max_id_similarity, raise csp.percent or csp.max_candidates (0: all)\n"
    ) in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize("key", ["eval_batch_size", "batch_size"])
def test_a_batch_that_does_not_split_over_the_devices_is_refused_before_training(key, tmp_path):
    """On 2 devices an eval batch of 63 used to fail only at the closing evaluation, after the whole training run;
    a training batch of 31 once the weights had loaded, as a "global batch" not named as the setting."""
    cmd = [
        sys.executable, "-m", "jaxood.train", "--config=configs/sot_glp.py:demo", f"--workdir={tmp_path / 'run'}",
        f"--config.{key}=63", "--config.model=no/such-model",  # it would fail at the weights, had the batch passed
    ]  # fmt: skip
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stderr[-3000:]
    expected = f"{key} 63 does not split over 2 devices: use a multiple of 2, such as 62 or 64"
    assert expected in out.stderr, out.stderr[-3000:]
    assert not (tmp_path / "run" / "checkpoints").exists()


def _progress_on_a_clock(monkeypatch, readings):
    """`jaxood.progress.Progress` on a clock that gives `readings` in turn, printing to the stream returned."""
    import functools
    import io
    import types

    from jaxood import progress

    clock = iter(readings)
    monkeypatch.setattr(progress, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    out = io.StringIO()
    return functools.partial(progress.Progress, every=0, stream=out), out


def test_progress_gives_seconds_per_step_under_one_a_second(monkeypatch):
    """A step of 282 s (the paper config on a CPU) read "0.0 steps/s"; it reads "281.8 s/step"."""
    Progress, out = _progress_on_a_clock(monkeypatch, [0.0, 281.8, 563.6, 563.6, 563.7])
    slow = Progress("train", 3, "steps")
    slow.update()
    slow.update()
    fast = Progress("ID", 100, "images")  # starts at 563.6 s
    fast.update(50)
    assert out.getvalue().splitlines() == [
        "[train] 1/3 steps (281.8 s/step, elapsed 4m41s, ETA 9m23s)",
        "[train] 2/3 steps (281.8 s/step, elapsed 9m23s, ETA 4m41s)",
        "[ID] 50/100 images (500.0 images/s, elapsed 0m00s, ETA 0m00s)",
    ]


def test_progress_rate_and_eta_leave_out_the_first_updates_one_off_start(monkeypatch):
    """An evaluation's first batch compiles its call (4.2 s of the demo's 5 s ID-accuracy pass on an H200): its rate
    and ETA counted that time for the whole pass. A first batch of 10 images after 40 s, then 10 images a second:
    the ETA is the 70 images left at that rate, 7 s (the mean since the start, 30 images in 42 s, gave 98 s)."""
    Progress, out = _progress_on_a_clock(monkeypatch, [0.0, 40.0, 41.0, 42.0])
    ids = Progress("ID", 100, "images")
    for _ in range(3):
        ids.update(10)
    assert out.getvalue().splitlines() == [
        "[ID] 10/100 images (4.0 s/image, elapsed 0m40s, ETA 6m00s)",  # no later update yet: the mean
        "[ID] 20/100 images (10.0 images/s, elapsed 0m41s, ETA 0m08s)",
        "[ID] 30/100 images (10.0 images/s, elapsed 0m42s, ETA 0m07s)",
    ]


def test_a_stop_whose_exception_was_swallowed_still_stops_the_evaluation(tmp_path):
    """A signal's exception raised inside a callback that swallows it (JAX's garbage-collection callback printed
    "Exception ignored in <function _xla_gc_callback>") let the evaluation go on and write its report: 2 of 30
    SIGTERMs while jaxood.evaluate compiled. The stop is kept, and the next batch raises it."""
    import signal
    import time

    from jaxood.data.pipeline import data_mesh
    from jaxood.data.preprocess import clip_eval
    from jaxood.data.toy_world import ToyWorld
    from jaxood.errors import StoppedAtOnce
    from jaxood.evaluate import score_dataset
    from jaxood.preemption import StopsAtOnce

    source, batches = ToyWorld("far_ood", per_class=1, size=16), []

    def scorer(images):
        batches.append(len(images))
        return {"mean": images.mean((1, 2, 3))}

    args = (source, scorer, clip_eval(16), 4, data_mesh())
    assert len(score_dataset("far", *args)["mean"]) == len(source) == 4 * len(batches)
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(StoppedAtOnce, match="^stopped by a preemption notice \\(SIGTERM\\) while testing$"):
        with StopsAtOnce(str(tmp_path), "while testing"):
            try:  # as the garbage-collection callback swallowed it
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except StoppedAtOnce:
                pass
            batches.clear()
            score_dataset("far", *args)
    assert batches == [] and signal.getsignal(signal.SIGTERM) is previous
    assert len(score_dataset("far", *args)["mean"]) == len(source)  # the next block starts with no stop


def test_devices_say_how_jax_multiplied_float32_matrices():
    """results.json's devices record JAX's matmul precision: "default" (TF32 on recent NVIDIA GPUs, bfloat16 passes
    on TPUs: float32 results then differ from PyTorch's in the fourth digit) or what JAX_DEFAULT_MATMUL_PRECISION or
    `jax.default_matmul_precision` asked for."""
    import jax
    import jax.numpy as jnp

    from jaxood import report

    with jax.default_matmul_precision(None):
        assert report.devices(jnp.float32)["matmul_precision"] == "default"
    with jax.default_matmul_precision("tensorfloat32"):
        assert report.devices(jnp.float32)["matmul_precision"] == "tensorfloat32"
    assert report.devices(jnp.float32)["matmul_precision"] == os.environ["JAX_DEFAULT_MATMUL_PRECISION"]  # conftest
