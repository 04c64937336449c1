"""Shared pytest fixtures."""
import pytest

import tf_sampled as tfs


@pytest.fixture(scope="session")
def ops():
    """The raw op wrappers of the compiled library (`tf_sampled.load_ops()`)."""
    return tfs.load_ops()
