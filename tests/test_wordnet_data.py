"""Tests of the bundled WordNet task (the example's tests: test_compare_samplers.py)."""

import os

import numpy as np
import pytest

from tf_sampled.datasets import load_wordnet

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NUM_EXAMPLES, _NUM_CLASSES = 95322, 20206


@pytest.fixture(scope="module")
def data():
    return load_wordnet()


def test_shapes_and_types(data):
    n_train, n_val = len(data.y_train), len(data.y_val)
    assert n_train + n_val == _NUM_EXAMPLES
    assert n_val == round(0.1 * _NUM_EXAMPLES)
    assert data.x_train.shape == (n_train, 32) and data.x_train.dtype == np.int32
    assert data.x_val.shape == (n_val, 32) and data.x_val.dtype == np.int32
    assert data.y_train.dtype == np.int64 and data.y_val.dtype == np.int64
    assert data.num_classes == _NUM_CLASSES == len(data.class_names)
    assert data.class_counts.shape == (_NUM_CLASSES,)
    assert data.class_counts.dtype == np.int64
    np.testing.assert_array_equal(
        data.class_counts, np.bincount(data.y_train, minlength=_NUM_CLASSES))
    for y in (data.y_train, data.y_val):
        assert y.min() >= 0 and y.max() < _NUM_CLASSES


def test_class_ids_in_decreasing_frequency(data):
    total = np.bincount(np.concatenate([data.y_train, data.y_val]),
                        minlength=data.num_classes)
    assert total.min() >= 1  # every class is somebody's parent
    assert np.all(np.diff(total) <= 0)
    assert data.class_names[0].split()[1] == "city"  # the most frequent parent


def test_tokens_padding_and_vocab(data):
    assert data.vocab[:2] == ["<pad>", "<unk>"]
    assert data.vocab_size == len(data.vocab)
    for x in (data.x_train, data.x_val):
        assert x.min() >= 0 and x.max() < data.vocab_size
        assert np.all(x[:, 0] > 0)  # no empty definition
        nonpad = x > 0
        # Padding only at the end: once a row hits 0 it stays 0.
        assert np.all(nonpad[:, :-1] >= nonpad[:, 1:])
    # Words seen twice are in the vocabulary: few tokens are <unk>.
    tokens = data.x_train[data.x_train > 0]
    assert np.mean(tokens == 1) < 0.03
    assert np.all(np.bincount(tokens, minlength=data.vocab_size)[2:100] > 0)


def test_split_is_deterministic_and_seeded(data):
    again = load_wordnet()
    np.testing.assert_array_equal(data.x_train, again.x_train)
    np.testing.assert_array_equal(data.y_val, again.y_val)
    other = load_wordnet(seed=1)
    assert not np.array_equal(data.y_val, other.y_val)
    short = load_wordnet(max_len=8, val_fraction=0.2)
    assert short.x_train.shape[1] == 8
    assert len(short.y_val) == round(0.2 * _NUM_EXAMPLES)


def test_bundled_files_and_licence():
    data_dir = os.path.join(_REPO, "tf_sampled", "data", "wordnet")
    with open(os.path.join(data_dir, "LICENSE.wordnet")) as f:
        assert "WordNet 3.0 Copyright 2006 by Princeton University" in f.read()
    size = sum(os.path.getsize(os.path.join(data_dir, n))
               for n in os.listdir(data_dir))
    assert size < 4e6
