#!/usr/bin/env python3
"""Builds the bundled WordNet task: definition (gloss) -> parent concept.

Reads WordNet 3.0's ``data.noun`` and ``data.verb`` (Debian: ``apt-get install
wordnet-base``, files under ``/usr/share/wordnet``) and writes a small processed
copy into ``tf_sampled/data/wordnet/``:

* ``vocab.txt.gz``: one word per line; line i is token id i. ``<pad>`` = 0,
  ``<unk>`` = 1, then every word seen at least twice in the glosses, by
  decreasing count (ties: alphabetical).
* ``classes.tsv.gz``: ``class_id, synset ("n02084071"), count, lemmas`` with
  class ids in DECREASING frequency (id 0 = most frequent parent; ties broken by
  the synset key), the order TensorFlow's log-uniform sampler assumes.
* ``examples.tsv.gz``: ``synset, class_id, token ids (space separated)``, one
  line per synset that has a hypernym, in file order (nouns, then verbs).
* ``LICENSE.wordnet``: Princeton's licence notice, which must travel with the
  data.

Task: every noun or verb synset with a hypernym is one example; its input is its
gloss, its label is its FIRST hypernym pointer (``@`` or, for instances, ``@i``,
whichever comes first in the pointer list). That gives 95,322 examples and
20,206 classes.

Tokenisation: the gloss is split at ';' and the segments that are quoted usage
examples (``"it was full of rackets..."``) are dropped, so the input is the
definition proper. The rest is lowercased and split into words
``[a-z0-9]+(?:['-][a-z0-9]+)*`` (punctuation and brackets dropped, hyphenated
words kept whole).

The output is deterministic (gzip headers carry no time or name).

Usage:  python tools/build_wordnet_data.py [--wordnet_dir /usr/share/wordnet]
"""

import argparse
import collections
import gzip
import io
import os
import re

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
_HYPERNYMS = ("@", "@i")
_MIN_COUNT = 2
_DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "tf_sampled", "data", "wordnet")


def parse_data_file(path):
    """Yields (synset_key, lemmas, first_hypernym_key or None, gloss)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  "):  # licence header
                continue
            data, _, gloss = line.partition(" | ")
            fields = data.split()
            offset, pos = fields[0], fields[2]
            w_cnt = int(fields[3], 16)
            lemmas = [fields[4 + 2 * i] for i in range(w_cnt)]
            i = 4 + 2 * w_cnt
            p_cnt = int(fields[i])
            i += 1
            hypernym = None
            for _ in range(p_cnt):
                symbol, target, target_pos = fields[i], fields[i + 1], fields[i + 2]
                i += 4
                if hypernym is None and symbol in _HYPERNYMS:
                    hypernym = target_pos + target
            yield pos + offset, lemmas, hypernym, gloss.strip()


def tokenize(gloss):
    """Definition words of a gloss, lowercased; quoted usage examples dropped."""
    parts = [p.strip() for p in gloss.split(";")]
    definition = " ".join(p for p in parts if p and not p.startswith('"'))
    return _TOKEN_RE.findall(definition.lower())


def licence_text(path):
    """The licence notice from a data file's header (lines starting with two spaces)."""
    lines = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith("  "):
                break
            # "  12 text  " -> "text"
            parts = line.strip().split(" ", 1)
            lines.append(parts[1].rstrip() if len(parts) > 1 else "")
    return "\n".join(lines).strip() + "\n"


def write_gz(path, text):
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                           compresslevel=9) as gz:
            gz.write(text.encode("utf-8"))


def build(wordnet_dir, out_dir):
    synsets = {}
    order = []
    for name in ("data.noun", "data.verb"):
        for key, lemmas, hypernym, gloss in parse_data_file(
            os.path.join(wordnet_dir, name)):
            synsets[key] = lemmas
            order.append((key, hypernym, gloss))

    examples = [(key, hyp, tokenize(gloss)) for key, hyp, gloss in order
                if hyp is not None]

    class_count = collections.Counter(hyp for _, hyp, _ in examples)
    classes = sorted(class_count, key=lambda k: (-class_count[k], k))
    class_id = {k: i for i, k in enumerate(classes)}

    word_count = collections.Counter(w for _, _, toks in examples for w in toks)
    words = sorted((w for w, c in word_count.items() if c >= _MIN_COUNT),
                   key=lambda w: (-word_count[w], w))
    vocab = ["<pad>", "<unk>"] + words
    word_id = {w: i for i, w in enumerate(vocab)}

    os.makedirs(out_dir, exist_ok=True)
    write_gz(os.path.join(out_dir, "vocab.txt.gz"), "\n".join(vocab) + "\n")
    write_gz(os.path.join(out_dir, "classes.tsv.gz"), "".join(
        f"{i}\t{k}\t{class_count[k]}\t{','.join(synsets.get(k, []))}\n"
        for i, k in enumerate(classes)))
    buf = io.StringIO()
    for key, hyp, toks in examples:
        ids = " ".join(str(word_id.get(w, 1)) for w in toks)
        buf.write(f"{key}\t{class_id[hyp]}\t{ids}\n")
    write_gz(os.path.join(out_dir, "examples.tsv.gz"), buf.getvalue())

    notice = licence_text(os.path.join(wordnet_dir, "data.noun"))
    with open(os.path.join(out_dir, "LICENSE.wordnet"), "w") as f:
        f.write("The files in this directory are derived from WordNet 3.0\n"
                "(data.noun, data.verb), processed by tools/build_wordnet_data.py.\n"
                "WordNet's licence follows.\n\n" + notice)

    n_tokens = sum(len(t) for _, _, t in examples)
    n_unk = sum(1 for _, _, t in examples for w in t if w not in word_id)
    print(f"examples {len(examples)}  classes {len(classes)}  vocab {len(vocab)}"
          f"  tokens {n_tokens} (unk {n_unk / n_tokens:.1%}, mean length "
          f"{n_tokens / len(examples):.1f}, empty {sum(not t for _, _, t in examples)})")
    for name in sorted(os.listdir(out_dir)):
        print(f"  {name}: {os.path.getsize(os.path.join(out_dir, name)):,} bytes")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wordnet_dir", default="/usr/share/wordnet")
    parser.add_argument("--output_dir", default=_DEFAULT_OUT)
    args = parser.parse_args()
    build(args.wordnet_dir, args.output_dir)


if __name__ == "__main__":
    main()
