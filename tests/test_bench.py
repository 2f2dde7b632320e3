"""The shipped benchmarks run end to end at tiny sizes, so the figures README quotes can still be measured.

Nothing here is timed against a bar: each benchmark must run through its code path (the trainer's step, the
loader, TFDS, torch's CLIP), print every figure it promises and return positive, finite rates.
"""

import importlib.util
import math
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT


def _positive(results: dict, keys) -> None:
    assert set(keys) <= set(results), sorted(results)
    for key in keys:
        assert math.isfinite(results[key]) and results[key] > 0, (key, results[key])


def test_data_benchmark_runs_every_part(capsys):
    from jaxood.bench import data

    r = data.main(["--images", "8", "--batch", "4", "--steps", "1", "--toy_images", "28", "--records", "16"])
    _positive(r, ("train", "eval", "toy_seconds", "label_records_per_s", "decode_check"))
    out = capsys.readouterr().out
    for part in ("(a) train", "(b) eval pipeline", "(c) toy world: 28 images", "(d) TFDS label", "(e) few-shot decode"):
        assert part in out


def test_sot_glp_benchmark_times_the_step_and_its_parts(tiny_hf, capsys):
    """Both prompt lengths and the breakdown: the step is the trainer's own (`make_step`, `TrainState`). On a tiny
    CLIP (`--model`), whose shapes are not ViT-B/16's: the benchmark's inputs take the model's."""
    from jaxood.bench import sot_glp

    r = sot_glp.main(["--classes", "2", "--batch", "1", "--model", tiny_hf[0]])
    _positive(r, ("step_truncated", "step_full", "bytes_truncated", "bytes_full", "compile_truncated", "compile_full"))
    _positive(r, ("text", "image", "ot"))
    assert r["length_truncated"] < 77 and r["bytes_truncated"] < r["bytes_full"]
    out = capsys.readouterr().out
    for part in (f"C=2, G=P=4 -> 16 prompts, image batch 1, {tiny_hf[0]}, ", "train step, full 77 tokens",
                 "text tower, 16 prompts", "top-K", "77 tokens: compiling\n  77 tokens: compiled in "):  # fmt: skip
        assert part in out
    # The suite's (conftest: "highest" unless set); JAX's own default is not printed.
    assert f", float32, matmul precision {os.environ['JAX_DEFAULT_MATMUL_PRECISION']}" in out


def test_sot_glp_benchmark_names_a_model_it_cannot_load(tmp_path, capsys):
    from jaxood.bench import sot_glp

    with pytest.raises(SystemExit):
        sot_glp.main(["--model", str(tmp_path / "nowhere")])
    assert f"error: --model: '{tmp_path / 'nowhere'}' is neither a directory nor" in capsys.readouterr().err


# Each benchmark as its command runs it, and the Ctrl-C played in it: the data one's as it writes its second temporary
# image, the others' as they read their arguments.
CTRL_C_AT = {
    "data": (
        "runpy.run_module('jaxood.bench.data', run_name='__main__')",
        "PIL.Image.Image.save = lambda self, path, **kw: open(path, 'wb').close() if '0.jpg' in path else stop()",
    ),
    "sot_glp": (
        "runpy.run_module('jaxood.bench.sot_glp', run_name='__main__')",
        "argparse.ArgumentParser.parse_args = stop",
    ),
    "clip_vs_torch": (
        f"runpy.run_path({os.path.join(ROOT, 'benchmarks', 'clip_vs_torch.py')!r}, run_name='__main__')",
        "argparse.ArgumentParser.parse_args = stop",
    ),
}


@pytest.mark.parametrize("bench", sorted(CTRL_C_AT))
def test_a_benchmark_stopped_by_ctrl_c_says_so_in_one_line(bench, tmp_path):
    """A Ctrl-C ended a benchmark on the traceback of what it was running (JAX's compile, one of its loops), unlike
    jaxood's other commands; it says what was kept, with a shell's status for SIGINT, and its temporary files are
    gone."""
    from jaxood.bench import KEPT
    from jaxood.errors import INTERRUPTED, INTERRUPTED_STATUS

    command, stopped = CTRL_C_AT[bench]
    script = textwrap.dedent(f"""
        import argparse, runpy, PIL.Image
        def stop(*args, **kwargs):
            raise KeyboardInterrupt
        {stopped}
        {command}
    """)
    env = {k: v for k, v in os.environ.items() if k != "JAXOOD_TRACEBACK"} | {"TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stderr) == (INTERRUPTED_STATUS, f"{INTERRUPTED} {KEPT}\n"), out.stderr
    assert os.listdir(tmp_path) == []


def test_clip_vs_torch_benchmark_compares_then_times(tiny_hf, capsys):
    """`benchmarks/clip_vs_torch.py` on a local HF CLIP (`--model`): outputs agree before anything is timed, and the
    report names the model it timed."""
    path = os.path.join(ROOT, "benchmarks", "clip_vs_torch.py")
    spec = importlib.util.spec_from_file_location("clip_vs_torch", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.main(["--model", tiny_hf[0], "--image_batch", "2", "--seconds", "0.01"])
    _positive(r, ("image_jax", "image_torch", "text_jax", "text_torch_77", "text_torch_cut"))
    out = capsys.readouterr().out
    err = float(out.split("encode_image max |jaxood - torch| = ")[1].split()[0])
    assert err < 1e-4
    assert f"(a) encode_image {tiny_hf[0]}, 32 px, batch 2:" in out
    assert "(b) encode_text 1000 ImageNet prompts" in out
