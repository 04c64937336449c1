"""Tests of the task loaders behind tf_sampled.datasets.load (WordNet: test_wordnet_data.py)."""

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

from tf_sampled import datasets
from tf_sampled.datasets import base

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _check_task(data, max_len=None):
    """Shapes, dtypes and id ranges every TaskData must satisfy."""
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val)):
        assert x.dtype == np.int32 and y.dtype == np.int64
        assert x.ndim == 2 and len(x) == len(y) > 0
        assert max_len is None or x.shape[1] == max_len
        assert 0 <= x.min() and x.max() < data.vocab_size
        assert 0 <= y.min() and y.max() < data.num_classes
    assert data.class_counts.shape == (data.num_classes,)
    np.testing.assert_array_equal(
        data.class_counts, np.bincount(data.y_train, minlength=data.num_classes))
    for names in (data.class_names, data.vocab):
        assert names is None or len(names) in (data.num_classes, data.vocab_size)


def test_package_is_numpy_only():
    # The loaders work without TensorFlow: import tf_sampled.datasets without
    # running tf_sampled/__init__.py (which loads the TensorFlow parts).
    code = (
        "import sys, types\n"
        "pkg = types.ModuleType('tf_sampled'); pkg.__path__ = ['tf_sampled']\n"
        "sys.modules['tf_sampled'] = pkg\n"
        "import tf_sampled.datasets as d\n"
        "d.load('wordnet'); d.load('synthetic', num_classes=100, num_train=10, num_val=5)\n"
        "assert 'tensorflow' not in sys.modules, 'a loader imports TensorFlow'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=_REPO)


def test_load_dispatches_and_rejects_unknown_names():
    assert set(datasets.LOADERS) == {"wordnet", "gcide", "lm1b", "movielens", "synthetic"}
    data = datasets.load("wordnet", max_len=8)
    assert data.name == "wordnet" and data.x_train.shape[1] == 8 and not data.ordered
    with pytest.raises(ValueError, match="Unknown dataset 'nope'.*gcide"):
        datasets.load("nope")


def test_lm_windows_stop_at_document_starts():
    ids = np.array([5, 6, 7, 8, 9])
    x, y = base.lm_windows(ids, [0, 3], context=3, chunk=2)
    np.testing.assert_array_equal(y, ids)
    # Input ids are class + 2; 1 marks a document start, 0 pads before it.
    np.testing.assert_array_equal(x, [[0, 0, 1], [0, 1, 7], [1, 7, 8],
                                      [0, 0, 1], [0, 1, 10]])


# --- synthetic ---------------------------------------------------------------


def test_synthetic_is_seeded_zipfian_and_cheap_at_10m_classes():
    data = datasets.load("synthetic", num_classes=10_000_000, num_train=50_000,
                         num_val=1_000, seed=3)
    _check_task(data, max_len=8)
    assert data.num_classes == 10_000_000 and data.class_names is None
    again = datasets.load_synthetic(num_classes=10_000_000, num_train=50_000,
                                    num_val=1_000, seed=3)
    np.testing.assert_array_equal(data.x_train, again.x_train)
    # Exponent 1 is TensorFlow's log-uniform: P(0) = log 2 / log(C + 1).
    p0 = np.log(2) / np.log(10_000_001)
    assert abs(np.mean(data.y_train == 0) - p0) < 5 * np.sqrt(p0 / 50_000)
    assert np.mean(data.y_train > 1_000_000) > 0.1  # the tail is really used


def test_synthetic_inputs_are_the_teachers_signature_words():
    data = datasets.load_synthetic(num_classes=1000, num_train=200, num_val=10,
                                   vocab_size=500, signature_len=3, noise=0.0)
    for x, y in zip(data.x_train, data.y_train):
        signature = datasets.synthetic.signature_words(y, np.arange(3), 500, 0)
        assert set(x) <= set(signature)
    noisy = datasets.load_synthetic(num_classes=1000, num_train=200, num_val=10,
                                    vocab_size=500, signature_len=3, noise=1.0)
    assert len(np.unique(noisy.x_train)) > 400  # uniform words


# --- gcide -------------------------------------------------------------------


def test_gcide_missing_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="sudo apt-get install dict-gcide"):
        datasets.load("gcide", path=str(tmp_path / "gcide.dict.dz"))


def test_gcide_on_a_small_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_SAMPLED_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "gcide.dict.dz"
    text = ("Cat \\Cat\\, n.\n   A small animal; the cat's fur.\n   [1913 Webster]\n"
            * 300 + "Dog \\Dog\\, n.\n   A loyal animal.\n")
    with gzip.open(path, "wt") as f:
        f.write(text)
    data = datasets.load_gcide(vocab_size=6, context=4, path=str(path), val_fraction=0.5)
    _check_task(data, max_len=4)
    assert data.ordered and data.language_model and data.num_classes == 6
    assert "webster" not in data.class_names  # source tags are dropped
    assert "cat's" in data.class_names and "<unk>" in data.class_names
    assert np.all(np.diff(data.class_counts) <= 0)  # classes in frequency order
    assert data.vocab[2:] == data.class_names  # input id = class id + 2
    # 300 * 9 + 6 tokens in chunks of 1,000: the seeded split holds out whole chunks.
    assert len(data.y_train) + len(data.y_val) == 2706
    assert len(data.y_val) % 1000 in (0, 706)
    assert os.listdir(tmp_path / "cache")  # the token stream was cached
    cached = datasets.load_gcide(vocab_size=6, context=4, path=str(path), val_fraction=0.5)
    np.testing.assert_array_equal(cached.x_train, data.x_train)


@pytest.mark.skipif(not os.path.exists("/usr/share/dictd/gcide.dict.dz"),
                    reason="Debian's dict-gcide not installed")
def test_gcide_real_vocabulary():
    data = datasets.load("gcide")  # 100k words; about 20 s the first time, then cached
    _check_task(data, max_len=6)
    assert data.num_classes == 100_000 and data.vocab_size == 100_002
    assert data.class_names[:3] == ["a", "the", "of"]
    assert len(data.y_train) > 4_500_000 and 50_000 < len(data.y_val) < 200_000
    assert np.mean(data.y_val == data.class_names.index("<unk>")) < 0.05


# --- TensorFlow Datasets (offline, with tfds's mock data) --------------------


@pytest.fixture
def mock_tfds():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=60):
        yield


def test_lm1b_with_mock_data(mock_tfds):  # pylint: disable=unused-argument
    data = datasets.load("lm1b", vocab_size=40, context=3, max_train=50, max_val=20)
    _check_task(data, max_len=3)
    assert data.language_model and data.num_classes == 40 and data.vocab_size == 42
    assert {"</s>", "<unk>"} <= set(data.class_names)
    eos = data.class_names.index("</s>")
    assert np.sum(data.y_train == eos) == 50  # one end per sentence
    assert np.sum(data.x_train[:, -1] == 1) == 50  # one start per sentence


def test_movielens_with_mock_data(mock_tfds):  # pylint: disable=unused-argument
    data = datasets.load("movielens", config="100k-ratings", val_fraction=0.25)
    _check_task(data, max_len=5)
    assert len(data.y_val) == 15 and data.vocab[:2] == ["<pad>", "<unseen>"]
    assert all(v.split("=")[0] in datasets.tfds_tasks.MOVIELENS_FIELDS
               for v in data.vocab[2:])


def test_tfds_tasks_name_the_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match="pip install tensorflow-datasets"):
        datasets.load_lm1b()
