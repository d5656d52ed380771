"Shared pytest setup."
import os
import sdr.core  # noqa: F401  (first: makes torchvision importable beside the CPU torch; see sdr.core.patch_torchvision)
import pytest

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes minutes; run with `pytest -m slow` (skipped in CI by default)')

def pytest_collection_modifyitems(config, items):
    if config.getoption('-m') or os.environ.get('SDR_SLOW') == '1': return
    skip = pytest.mark.skip(reason='slow: set SDR_SLOW=1 or pass -m slow')
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)
