"Shared pytest setup."
import os
from sdr.torchvision_shim import patch_torchvision
patch_torchvision()   # before torchvision is imported (by torch-fidelity, diffusers, grad-cam) beside the CPU torch
import pytest

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes minutes; run with `pytest -m slow` (skipped in CI by default)')

def pytest_collection_modifyitems(config, items):
    if config.getoption('-m') or os.environ.get('SDR_SLOW') == '1': return
    skip = pytest.mark.skip(reason='slow: set SDR_SLOW=1 or pass -m slow')
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)
