"""Small real datasets bundled with tf_sampled (numpy only; no TensorFlow import)."""

from tf_sampled.datasets.wordnet import WordNetData, load_wordnet

__all__ = ["WordNetData", "load_wordnet"]
