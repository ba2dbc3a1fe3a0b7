from __future__ import annotations

import pytest

from fgsbir_plugin._common import default_data_dir


@pytest.fixture(scope="session")
def data_dir():
    """The real datasets folder; tests that need it are skipped, visibly, when it is absent."""
    root = default_data_dir()
    if root is None or not root.is_dir():
        pytest.skip("real FG-SBIR data not found: set $FGSBIR_DATA or place it at ../shared/data")
    return root
