"""The WordNet 3.0 label pool for NegLabel and CSP, shipped with jaxood.

`load_pool()` reads `assets/wordnet30_pool.tsv.gz`: one row per (lemma, part of
speech, lexname) with underscores turned into spaces. Order: nouns then
adjectives; inside each, by lexname, then lemma (case-insensitive); a lemma is
kept once per part of speech, under the first lexname in that order (a word with
senses in several lexicographer files keeps the alphabetically first).

The file is built from the WordNet 3.0 database files (`data.noun`,
`data.adj`; Debian's `wordnet-base` installs them in /usr/share/wordnet) by

    python -m jaxood.scores.wordnet --wordnet_dir=/usr/share/wordnet

The 45 lexicographer file names are WordNet's fixed list (`lexnames(5)`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gzip
import io
import os
import re
import sys

from jaxood.cache import OUT_KEPT, write_out
from jaxood.errors import InputMissing, InvalidInput, exit_with, report_user_errors

POOL_PATH = os.path.join(os.path.dirname(__file__), "assets", "wordnet30_pool.tsv.gz")

LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip
_ADJ_MARKER = re.compile(r"\((a|p|ip)\)$")


@dataclasses.dataclass(frozen=True)
class Pool:
    words: tuple[str, ...]
    pos: tuple[str, ...]  # "n" or "a"
    lexnames: tuple[str, ...]

    def select(self, pos: str, exclude_lexnames: tuple[str, ...] = ()) -> list[str]:
        """Words of one part of speech, in pool order, without the excluded lexicographer files."""
        return [w for w, p, f in zip(self.words, self.pos, self.lexnames) if p == pos and f not in exclude_lexnames]


def _parse(path: str) -> list[tuple[str, str]]:
    """(lemma, lexname) for every word of every synset of a `data.*` file."""
    if not os.path.isfile(path):
        raise InputMissing(
            f"{path} not found: --wordnet_dir must be a WordNet 3.0 database folder with data.noun and data.adj "
            "(on Debian or Ubuntu `apt install wordnet-base` puts one in /usr/share/wordnet)"
        )
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if line.startswith("  "):  # licence header
                continue
            fields = line.split(" ")
            try:  # offset, lexicographer file number, synset type, word count (hex), then (word, lex id) pairs
                lexname = LEXNAMES[int(fields[1])]
                words = [fields[4 + 2 * k] for k in range(int(fields[3], 16))]
            except (IndexError, ValueError) as err:
                raise InvalidInput(
                    f"{path} line {number} is not a WordNet data-file synset line ({err}): --wordnet_dir must hold "
                    "the WordNet 3.0 database files as distributed (wordnet-base), not other files under those names"
                ) from err
            out.extend((_ADJ_MARKER.sub("", word).replace("_", " "), lexname) for word in words)
    return out


def build_pool(wordnet_dir: str) -> Pool:
    rows = []
    for pos, fname in (("n", "data.noun"), ("a", "data.adj")):
        seen = set()
        for word, lexname in sorted(_parse(os.path.join(wordnet_dir, fname)), key=lambda r: (r[1], r[0].lower(), r[0])):
            if word.lower() not in seen:
                seen.add(word.lower())
                rows.append((word, pos, lexname))
    return Pool(*map(tuple, zip(*rows)))


def write_pool(pool: Pool, path: str = POOL_PATH) -> None:
    """`pool` gzipped to `path` whole or not at all (`write_out`): its default is the pool jaxood ships, which a
    stop or a full disk mid-write left cut short, failing every NegLabel and CSP run after it."""
    with write_out(path, "the pool", "wb") as raw, gzip.GzipFile(os.path.basename(path), "wb", 9, raw) as packed:
        with io.TextIOWrapper(packed, encoding="utf-8", newline="\n") as f:
            for row in zip(pool.words, pool.pos, pool.lexnames):
                f.write("\t".join(row) + "\n")


@functools.lru_cache(maxsize=1)
def load_pool() -> Pool:
    with gzip.open(POOL_PATH, "rt", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    return Pool(*map(tuple, zip(*rows)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m jaxood.scores.wordnet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--wordnet_dir", default="/usr/share/wordnet")
    ap.add_argument("--out", default=POOL_PATH)
    args = ap.parse_args(argv)
    pool = build_pool(args.wordnet_dir)
    write_pool(pool, args.out)
    print(f"{args.out}: {pool.pos.count('n')} nouns, {pool.pos.count('a')} adjectives")
    return 0


if __name__ == "__main__":
    exit_with(report_user_errors(main, OUT_KEPT)(sys.argv[1:]))
