"""jaxood's BPE tokenizer against Hugging Face's CLIPTokenizer (Rust) given the same vocabulary."""

import numpy as np
import pytest

from jaxood.models.tokenizer import get_tokenizer, tokenize

AWKWARD = [
    "a photo of a dog",
    "A PHOTO OF A DOG",
    "  lots   of\twhite\n\nspace  ",
    "café naïve résumé façade",
    "e\u0301cole",  # decomposed accent: NFC composes it
    "Straße ΑΘΗΝΑ москва 東京タワー 서울",
    "emoji 🐕‍🦺 and 🎉🎉!",
    "punctuation!?... (brackets) [x] {y} <z> --- ''quoted'' \"double\"",
    "it's they're we've I'm you'll he'd don't",
    "numbers 1234567 3.14159 1e-5 #42 $9.99 50%",
    "hyphen-ated under_scored slash/ed back\\slash",
    "<|startoftext|> special <|endoftext|>",
    "",
    "ｆｕｌｌｗｉｄｔｈ ﬁ ligature ℌ",
    "tabs\tand\rcarriage\u00a0nbsp\u2003emspace",
    "golden retriever, sea lion, great white shark, african hunting dog",
]
LONG = " ".join(f"word{i} extraordinarily" for i in range(60))  # far more than 77 tokens


@pytest.fixture(scope="module")
def hf_tokenizer():
    """Hugging Face's CLIPTokenizer on the vocabulary and merges jaxood's tokenizer builds from CLIP's BPE file."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=dict(get_tokenizer().encoder), merges=list(get_tokenizer().merges))


def test_known_ids():
    ids = tokenize("a photo of a dog")
    assert ids.dtype == np.int32 and ids.shape == (1, 77)
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 1929, 49407]
    assert not ids[0, 7:].any()


def test_vocabulary_size():
    assert get_tokenizer().vocab_size == 49408


@pytest.mark.parametrize("text", AWKWARD)
def test_matches_hf(hf_tokenizer, text):
    want = hf_tokenizer(text)["input_ids"]
    got = tokenize(text)[0]
    assert got[: len(want)].tolist() == want
    assert not got[len(want) :].any()


def test_truncation_keeps_eot_last(hf_tokenizer):
    want = hf_tokenizer(LONG, max_length=77, truncation=True)["input_ids"]
    got = tokenize([LONG, "short"])
    assert len(want) == 77 and got[0].tolist() == want
    assert got[0, -1] == 49407 and np.argmax(got[0]) == 76
    assert got.shape == (2, 77)


def test_batch_equals_single():
    batch = tokenize(AWKWARD)
    for row, text in zip(batch, AWKWARD):
        np.testing.assert_array_equal(row, tokenize(text)[0])


def test_custom_context_length():
    ids = tokenize(["a photo of a dog"], context_length=5)
    assert ids.tolist() == [[49406, 320, 1125, 539, 49407]]


def test_every_word_jaxood_prompts_with_matches_hf(hf_tokenizer):
    """The texts jaxood tokenizes for real: all 139,277 WordNet lemmas of the NegLabel / CSP pool and the 1000
    ImageNet class names (apostrophes, digits, hyphens, periods, accents), as HF tokenizes them."""
    from jaxood.data.classnames import imagenet_classnames
    from jaxood.scores.wordnet import load_pool

    texts = list(load_pool().words) + list(imagenet_classnames())
    assert len(texts) == 140_277
    got = tokenize(texts)
    want = hf_tokenizer(texts)["input_ids"]
    differ = [t for t, g, w in zip(texts, got, want) if g[: len(w)].tolist() != w or g[len(w) :].any()]
    assert not differ, differ[:10]
