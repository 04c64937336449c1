"""Tasks for comparing samplers, all in one shape (`TaskData`); numpy only.

`load(name, **options)` is the one entry point: `wordnet` (bundled, the
default), `gcide` (Debian's dict-gcide), `lm1b` and `movielens` (TensorFlow
Datasets, downloaded on first use), `synthetic` (generated from a seed).
"""

from tf_sampled.datasets.base import TaskData
from tf_sampled.datasets.gcide import load_gcide
from tf_sampled.datasets.synthetic import load_synthetic
from tf_sampled.datasets.tfds_tasks import load_lm1b, load_movielens
from tf_sampled.datasets.wordnet import WordNetData, load_wordnet

LOADERS = {
    "wordnet": load_wordnet,
    "gcide": load_gcide,
    "lm1b": load_lm1b,
    "movielens": load_movielens,
    "synthetic": load_synthetic,
}


def load(name, **options):
    """Loads task `name` (a key of `LOADERS`) with its loader's keyword options."""
    if name not in LOADERS:
        raise ValueError(f"Unknown dataset {name!r}; choose from {', '.join(LOADERS)}.")
    return LOADERS[name](**options)


__all__ = ["LOADERS", "TaskData", "WordNetData", "load", "load_gcide", "load_lm1b",
           "load_movielens", "load_synthetic", "load_wordnet"]
