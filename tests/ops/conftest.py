"""Fixtures shared by the op tests."""
import pytest

from lattice_helpers import require_extension


@pytest.fixture
def extension_built():
    """Skip the test when toco_fast._C is not built."""
    require_extension()
