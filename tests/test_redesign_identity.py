"""The reader's redesign (issue 16) moves code, not results: seeded training, sampling and metrics through every trainer
and sampler give exactly the fingerprints recorded at the commit before the redesign (tests/golden/redesign.json, written
by tests/redesign_fingerprints.py)."""
import json

import pytest

from redesign_fingerprints import GOLDEN, fingerprints


@pytest.fixture(scope='module')
def now(tmp_path_factory):
    return fingerprints(tmp_path_factory.mktemp('fingerprints'))


def test_golden_file_is_from_a_clean_commit():
    golden = json.loads(GOLDEN.read_text())
    assert len(golden['commit']) == 40 and golden['sdr_dirty'] is False, golden['commit']


@pytest.mark.parametrize('key', sorted(json.loads(GOLDEN.read_text())['fingerprints']))
def test_bit_identical_to_before_the_redesign(now, key):
    want = json.loads(GOLDEN.read_text())['fingerprints'][key]
    assert key in now, f'{key}: no longer computed'
    assert now[key] == want, f'{key} changed since {json.loads(GOLDEN.read_text())["commit"][:7]}: {now[key]} != {want}'


def test_nothing_new_is_unchecked(now):
    assert set(now) == set(json.loads(GOLDEN.read_text())['fingerprints'])
