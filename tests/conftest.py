"""Shared pytest fixtures."""
import pytest

import tf_sampled as tfs
from raw_ops import RawOps


@pytest.fixture(scope="session")
def ops():
    """The raw ops (`tf_sampled.load_ops()`), taking arrays for variable inputs."""
    return RawOps(tfs.load_ops())
