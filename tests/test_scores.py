"""Metrics against sklearn and hand cases; every score on small hand-worked cases."""

import gzip
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import auc, average_precision_score, roc_auc_score, roc_curve

from jaxood.errors import InputMissing, InvalidInput
from jaxood.scores import logits as logit_scores
from jaxood.scores import mcm, metrics, neglabel, odin
from jaxood.scores.wordnet import Pool, build_pool, load_pool

# ------------------------------------------------------------------- metrics


def test_auroc_check_value_from_spec():
    id_s = [0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.3, 0.2]
    ood_s = [0.65, 0.4, 0.35, 0.3, 0.1, 0.05]
    assert metrics.auroc(id_s, ood_s) == pytest.approx(0.78125, abs=1e-12)


def _sk_fpr95(id_s, ood_s):
    y = np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))]
    fpr, tpr, _ = roc_curve(y, np.r_[id_s, ood_s], drop_intermediate=False)
    return fpr[np.argmax(tpr >= 0.95)]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_metrics_match_sklearn(seed, ties):
    rng = np.random.RandomState(seed)
    id_s, ood_s = rng.normal(1, 1, 300 + seed), rng.normal(0, 1, 200)
    if ties:  # heavy ties: few distinct values shared by both sets
        id_s, ood_s = np.round(id_s), np.round(ood_s)
    y = np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))]
    s = np.r_[id_s, ood_s]
    m = metrics.ood_metrics(id_s, ood_s)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert m["aupr_in"] == pytest.approx(average_precision_score(y, s), abs=1e-6)
    assert m["aupr_out"] == pytest.approx(average_precision_score(1 - y, -s), abs=1e-6)
    assert m["fpr95"] == pytest.approx(_sk_fpr95(id_s, ood_s), abs=1e-12)
    fpr, tpr = metrics.roc_curve(id_s, ood_s)  # the curve the report plots, ties as in the table's AUROC
    sk_fpr, sk_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)
    assert auc(fpr, tpr) == pytest.approx(m["auroc"], abs=1e-12)  # sklearn's trapezoid area (NumPy 2's np.trapezoid)


@pytest.mark.parametrize("seed", range(3))
def test_tied_pairs_count_every_pair_with_equal_scores(seed):
    rng = np.random.RandomState(seed)
    id_s = np.r_[rng.randint(0, 6, 40), np.inf, -np.inf].astype(np.float32)  # infinities tie with their like
    ood_s = np.r_[rng.randint(3, 9, 30), np.inf, 2.5].astype(np.float32)
    by_pair = np.mean(id_s[:, None] == ood_s[None, :])
    assert metrics.tied_pairs(id_s, ood_s) == pytest.approx(by_pair, abs=1e-12)
    assert metrics.tied_pairs(id_s, ood_s) > 0
    assert metrics.tied_pairs([0.9, 0.8], [0.85, 0.1, 7.0]) == 0.0


def test_tied_pairs_bound_how_far_auroc_moves_were_the_ties_broken():
    """AUROC counts a tie half: breaking each tied pair for ID (or for OOD) moves it by half the tied fraction."""
    id_s, ood_s = np.array([1.0, 1.0, 0.5]), np.array([1.0, 0.2])  # 2 of 6 pairs tied
    assert metrics.tied_pairs(id_s, ood_s) == pytest.approx(1 / 3)
    assert metrics.auroc(id_s, ood_s) == pytest.approx(4 / 6)
    assert metrics.auroc(id_s + [1e-6, 1e-6, 0], ood_s) == pytest.approx(4 / 6 + 1 / 6)
    assert metrics.auroc(id_s, ood_s + [1e-6, 0]) == pytest.approx(4 / 6 - 1 / 6)


def test_fpr95_hand_cases():
    ids = np.arange(1, 21, dtype=float)  # floor(0.05 * 20) = 1 -> threshold is the 2nd smallest, 2
    assert metrics.tpr95_threshold(ids[::-1]) == 2.0  # the threshold the report's histograms draw, too
    assert metrics.fpr_at_95_tpr(ids, [1, 2, 3, 0.5]) == 0.5
    assert metrics.fpr_at_95_tpr([5.0] * 10, [5.0, 4.0]) == 0.5  # ties at the threshold are false positives
    assert metrics.fpr_at_95_tpr([0.1, 0.5, 0.9], [0.05, 0.1, 0.2]) == pytest.approx(2 / 3)  # n=3: smallest ID score
    assert metrics.fpr_at_95_tpr([0.7], [0.7, 0.69]) == 0.5
    assert metrics.fpr_at_95_tpr(np.arange(100.0), np.arange(100.0) - 10) == pytest.approx(
        0.85
    )  # threshold 5 -> 85 above


def test_accuracy_and_errors():
    assert metrics.accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), [1, 1]) == 0.5
    # A row with a NaN logit predicts no class (argmax would say the first NaN's), on host and on device alike.
    logits = np.array([[1.0, 3.0, 2.0], [np.nan, 1.0, 2.0], [np.nan, np.nan, np.nan], [0.0, 0.0, 0.0]])
    assert np.asarray(logit_scores.predicted_class(jnp.asarray(logits))).tolist() == [1, -1, -1, 0]
    assert metrics.accuracy(logits, [1, 0, 0, 0]) == 0.5
    with pytest.raises(ValueError):
        metrics.ood_metrics([], [1.0])
    with pytest.raises(ValueError, match="NaN scores have no rank: 0 ID and 1 OOD"):
        metrics.ood_metrics([1.0, 2.0], [np.nan, 0.0])


def test_infinite_scores_rank_as_the_extremes():
    """+-inf (e.g. an overflowed logit) ranks above / below every finite score, so the metrics are those of the
    scores with the infinities replaced by values beyond the finite ones."""
    id_s, ood_s = np.array([np.inf, 0.9, 0.4, -np.inf]), np.array([0.5, -np.inf, 0.1, np.inf])
    assert metrics.ood_metrics(id_s, ood_s) == metrics.ood_metrics(np.clip(id_s, -10, 10), np.clip(ood_s, -10, 10))


# ------------------------------------------------------------- logit scores


def test_logit_scores_by_hand():
    z = jnp.array([[1.0, 2.0, 3.0]])
    e = np.exp([1.0, 2.0, 3.0])
    assert float(logit_scores.msp(z)[0]) == pytest.approx(e[2] / e.sum(), rel=1e-6)
    assert float(logit_scores.max_logit(z)[0]) == 3.0
    assert float(logit_scores.energy(z)[0]) == pytest.approx(math.log(e.sum()), rel=1e-6)
    assert float(logit_scores.energy(z, 2.0)[0]) == pytest.approx(
        2 * math.log(np.exp(np.array([1, 2, 3]) / 2).sum()), rel=1e-6
    )


def test_mcm_and_gl_mcm_by_hand():
    cos = jnp.array([[1.0, 0.0], [math.sqrt(0.5), math.sqrt(0.5)]])
    got = mcm.mcm(cos)
    assert float(got[0]) == pytest.approx(math.e / (math.e + 1), rel=1e-6)
    assert float(got[1]) == pytest.approx(0.5, rel=1e-6)
    assert float(mcm.mcm(cos, temperature=0.5)[0]) == pytest.approx(math.e**2 / (math.e**2 + 1), rel=1e-6)
    # Patch cosines (B, N, C): image 0 has a patch on class 1 at cosine 1; image 1's patches are undecided.
    local_cos = jnp.array([[[0.0, 1.0], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]])
    gl = mcm.gl_mcm(cos, local_cos, lambda_local=0.5)
    assert float(gl[0]) == pytest.approx(math.e / (math.e + 1) * 1.5, rel=1e-6)
    assert float(gl[1]) == pytest.approx(0.5 + 0.5 * 0.5, rel=1e-6)


# ---------------------------------------------------------------- NegLabel


def test_neglabel_score_by_hand():
    image = jnp.array([[1.0, 0.0]])
    pos = jnp.array([[1.0, 0.0]])
    neg = np.array([[0.0, 1.0], [0.6, 0.8]])  # cosines 0 and 0.6
    s1 = neglabel.neglabel_score(image, pos, jnp.asarray(neglabel.group_negatives(neg, 1)), temperature=1.0)
    assert float(s1[0]) == pytest.approx(math.e / (math.e + 1 + math.exp(0.6)), rel=1e-6)
    groups = neglabel.group_negatives(neg, 2, seed=0)
    s2 = neglabel.neglabel_score(image, pos, jnp.asarray(groups), temperature=1.0)
    want = 0.5 * (math.e / (math.e + 1) + math.e / (math.e + math.exp(0.6)))
    assert float(s2[0]) == pytest.approx(want, rel=1e-6)
    # temperature scales the cosines: T = 0.5 is the same as doubling them at T = 1
    s3 = neglabel.neglabel_score(image, pos, jnp.asarray(neg[None]), temperature=0.5)
    assert float(s3[0]) == pytest.approx(math.e**2 / (math.e**2 + 1 + math.exp(1.2)), rel=1e-6)


def test_group_negatives_drops_remainder_with_fixed_permutation():
    """As NegLabel's `grouping`: `neg[:, :-drop]` first (the last of the mined order, the adjectives nearest the ID
    classes), then one seeded permutation of the rest. Permuting first dropped a random one."""
    neg = np.arange(7 * 2, dtype=float).reshape(7, 2)
    g = neglabel.group_negatives(neg, 3, seed=1)
    assert g.shape == (3, 2, 2)
    assert sorted(g[..., 0].ravel().tolist()) == [0, 2, 4, 6, 8, 10]  # rows 0-5: the last, 6, is dropped
    perm = np.random.RandomState(1).permutation(6)
    np.testing.assert_array_equal(g.reshape(6, 2), neg[perm])
    np.testing.assert_array_equal(g, neglabel.group_negatives(neg, 3, seed=1))


def _unit(deg):
    return np.array([math.cos(math.radians(deg)), math.sin(math.radians(deg))])


def test_mining_keeps_lowest_quantile_per_word_type():
    """ID classes at 0 and 10 degrees. With C = 2 the 0.95-quantile of a candidate's two
    cosines is min + 0.95 (max - min); the order follows the angle to the nearest class."""
    id_feats = np.stack([_unit(0), _unit(10)])
    # nouns at 20, 90, 50, 170, 130 degrees; adjectives at 100, 15, 60, 80
    angles = [20, 90, 50, 170, 130, 100, 15, 60, 80]
    types = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    cand = np.stack([_unit(a) for a in angles])
    sims = cand @ id_feats.T
    d = sims.min(1) + 0.95 * (sims.max(1) - sims.min(1))
    # by hand: nouns sorted by d ascending -> 130 (idx 4) and 170 (idx 3) are the least similar
    assert np.argsort(d[:5])[:2].tolist() == [4, 3] or np.argsort(d[:5])[:2].tolist() == [3, 4]
    kept = neglabel.mine(cand, types, id_feats, percent=0.4)  # int(0.4 * 5) = 2 nouns, int(0.4 * 4) = 1 adj
    assert kept.tolist() == [3, 4, 5]  # cos at 170 (-0.97..) < cos at 130; adjective at 100 degrees
    assert neglabel.kept_at_most(types, 0.4) == 3 and neglabel.kept_at_most(types, 0.2) == 1  # 1 noun, 0 adjectives
    # CSP's near-duplicate exclusion first drops the noun at 20 degrees (cos 10 deg = 0.985 to
    # class 10) and the adjective at 15 (cos 5 deg = 0.996); all others are below cos 40 deg.
    kept = neglabel.mine(cand, types, id_feats, percent=1.0, max_id_similarity=0.95)
    assert sorted(kept.tolist()) == [1, 2, 3, 4, 5, 7, 8]  # fewer than kept_at_most(types, 1.0), 9


def test_candidate_pools():
    pool = Pool(
        words=("dog", "Gaul", "metre", "cake", "team", "red", "lunar"),
        pos=("n", "n", "n", "n", "n", "a", "a"),
        lexnames=("noun.animal", "noun.person", "noun.quantity", "noun.food", "noun.group", "adj.all", "adj.pert"),
    )
    neg = neglabel.neglabel_candidates(pool)
    assert neg.words == ("Gaul", "metre", "team", "red", "lunar")  # no noun.animal / noun.food, as the seed code
    assert neg.templates[0] == ("the nice {}",) and neg.templates[-1] == ("This is a {} photo",)
    assert neg.word_type.tolist() == [0, 0, 0, 1, 1]
    csp = neglabel.csp_candidates(pool, seed=3)
    sup = neglabel.CSP_SUPERCLASSES[np.random.RandomState(3).randint(14, size=1)[0]]
    assert csp.words == (f"red {sup}",) and csp.templates[0] == neglabel.CSP_ADJ_TEMPLATES


def test_shipped_wordnet_pool():
    pool = load_pool()
    assert pool.pos.count("n") == 117798 and pool.pos.count("a") == 21479  # WordNet 3.0 unique lemmas
    nouns = pool.select("n")
    assert "golden retriever" in nouns and not any("_" in w for w in nouns[:1000])
    assert len(pool.select("n", neglabel.NEGLABEL_EXCLUDE)) < len(nouns)
    assert "noun.animal" in pool.lexnames and "adj.pert" in pool.lexnames


def _synset(offset, lexfile, kind, *words):
    """One line of a WordNet data file: offset, lexicographer file number, type, word count in hex, (word, lex id)."""
    pairs = " ".join(f"{w} 0" for w in words)
    return f"{offset:08d} {lexfile:02d} {kind} {len(words):02x} {pairs} 000 | a gloss"


def _wordnet_files(folder):
    """`data.noun` and `data.adj` in `folder`, as WordNet's database files: 12 nouns and 5 adjectives in the pool."""
    header = "  1 This software and database is being provided to you, the LICENSEE, by Princeton University"
    ten = ("golden_retriever", "Dog", "ant", "bee", "cat", "cow", "elk", "gnu", "owl", "yak")  # count 0a: hex
    (folder / "data.noun").write_text("\n".join([
        header,
        _synset(1740, 13, "n", "cake", "dog"),  # noun.food, after noun.animal: its "dog" is a duplicate
        _synset(1930, 5, "n", *ten),  # noun.animal
        _synset(2000, 3, "n", "entity"),  # noun.Tops: upper case sorts first
    ]) + "\n")  # fmt: skip
    (folder / "data.adj").write_text("\n".join([
        header,
        _synset(1740, 1, "a", "lunar"),  # adj.pert
        _synset(14358, 0, "s", "abounding", "galore(ip)"),  # adj.all; syntactic marker dropped
        _synset(2098, 0, "a", "able", "cake"),  # a noun's word is kept again as an adjective
    ]) + "\n")  # fmt: skip


def test_build_pool_from_wordnet_files(tmp_path):
    _wordnet_files(tmp_path)
    pool = build_pool(str(tmp_path))
    animals = ["ant", "bee", "cat", "cow", "Dog", "elk", "gnu", "golden retriever", "owl", "yak"]
    assert pool.words == ("entity", *animals, "cake", "able", "abounding", "cake", "galore", "lunar")
    assert pool.pos == ("n",) * 12 + ("a",) * 5
    assert pool.lexnames == ("noun.Tops",) + ("noun.animal",) * 10 + ("noun.food",) + ("adj.all",) * 4 + ("adj.pert",)


def test_a_pool_written_again_and_stopped_midway_is_the_one_written_before(tmp_path, monkeypatch, capsys):
    """The pool file was rewritten in place: stopped midway (Ctrl-C, a full disk), the pool jaxood ships, the
    command's default --out, was left cut short, and every NegLabel and CSP run after it failed."""
    from jaxood.cache import OUT_KEPT
    from jaxood.errors import report_user_errors
    from jaxood.scores import wordnet

    _wordnet_files(tmp_path)
    out = tmp_path / "pool.tsv.gz"
    command = report_user_errors(wordnet.main, OUT_KEPT)
    assert command([f"--wordnet_dir={tmp_path}", f"--out={out}"]) == 0
    with gzip.open(out, "rt", encoding="utf-8") as f:
        assert f.read().splitlines()[:2] == ["entity\tn\tnoun.Tops", "ant\tn\tnoun.animal"]
    written = out.read_bytes()

    def words_then_ctrl_c():
        yield from ("entity", "ant")
        raise KeyboardInterrupt

    stopped = Pool(words_then_ctrl_c(), ("n",) * 12, ("noun.Tops",) + ("noun.animal",) * 11)
    monkeypatch.setattr(wordnet, "build_pool", lambda folder: stopped)
    assert command([f"--wordnet_dir={tmp_path}", f"--out={out}"]) == 130
    assert capsys.readouterr().err == (
        "stopped by Ctrl-C. --out's file is written whole or not at all: one there before is as it was.\n"
    )
    assert out.read_bytes() == written and sorted(os.listdir(tmp_path)) == ["data.adj", "data.noun", "pool.tsv.gz"]


def test_build_pool_names_missing_or_foreign_files(tmp_path):
    with pytest.raises(InputMissing, match=r"data.noun not found.*apt install wordnet-base"):
        build_pool(str(tmp_path))
    (tmp_path / "data.noun").write_text("not a synset line\n")
    with pytest.raises(InvalidInput, match=r"data.noun line 1 is not a WordNet data-file synset line"):
        build_pool(str(tmp_path))


# -------------------------------------------------------------------- ODIN


def _linear_model(w):
    return lambda x: x.reshape(x.shape[0], -1) @ w


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_odin_and_iodin_by_hand():
    rng = np.random.RandomState(0)
    x = rng.normal(size=(2, 2, 2, 3)).astype(np.float32)
    w = rng.normal(size=(12, 4)).astype(np.float32)
    std = np.array([0.5, 1.0, 2.0], np.float32)
    t, eps = 10.0, 0.01
    # Analytic gradient of log max softmax(xW / T): (W[:, y] - W p) / T
    z = x.reshape(2, -1) @ w
    p = _softmax(z / t)
    y = z.argmax(-1)
    g = np.stack([(w[:, y[b]] - w @ p[b]) / t for b in range(2)])  # (2, 12)
    std_flat = np.tile(std, 4)
    x_odin = x.reshape(2, -1) + eps * np.sign(g) / std_flat
    want_odin = _softmax(x_odin @ w / t).max(-1)
    got = odin.odin(_linear_model(jnp.asarray(w)), jnp.asarray(x), temperature=t, eps=eps, std=std)
    np.testing.assert_allclose(got, want_odin, rtol=1e-5)
    top = np.abs(g).argmax(-1)
    x_i = x.reshape(2, -1).copy()
    for b in range(2):
        x_i[b, top[b]] += eps * np.sign(g[b, top[b]]) / std_flat[top[b]]
    want_i = _softmax(x_i @ w / t).max(-1)
    got_i = odin.iodin(_linear_model(jnp.asarray(w)), jnp.asarray(x), temperature=t, eps=eps, std=std)
    np.testing.assert_allclose(got_i, want_i, rtol=1e-5)
    assert not np.allclose(want_i, want_odin)
