"""The reader's redesign (issue 16) moves code, not results: seeded training, sampling and metrics through every trainer
and sampler give exactly the fingerprints of the code before the redesign (commit ac0270e: the library of c07a522 plus
tests/redesign_fingerprints.py with its imports of that time).

A run is bit-identical only on CPUs with the same vector units (PROTOCOL amendment of 2026-12-02 08:40 UTC), so the
reference is computed here, on this machine, from the old commit's files (`git archive`). Without the git history the
test compares with tests/golden/redesign.json, which was written on a CPU with the flags it records, and only on a CPU
with those flags."""
import io, json, os, subprocess, sys, tarfile

import pytest

from redesign_fingerprints import GOLDEN, ROOT, fingerprints
from sdr.runs import cpu_facts

BEFORE = 'ac0270e'   # the commit before the redesign (the golden file's commit c07a522, plus the fingerprint script)
GOLD = json.loads(GOLDEN.read_text())


def fingerprints_before(work) -> dict | None:
    "The fingerprints of the code at BEFORE, run in a child process from its files (None without the git history)."
    tar = subprocess.run(['git', '-C', str(ROOT), 'archive', BEFORE, 'sdr', 'tests/redesign_fingerprints.py'],
                         capture_output=True)
    if tar.returncode != 0: return None
    safe = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}   # Python >= 3.11.4; git archive is trusted anyway
    tarfile.open(fileobj=io.BytesIO(tar.stdout)).extractall(work / 'old', **safe)
    out = subprocess.run([sys.executable, str(work / 'old' / 'tests' / 'redesign_fingerprints.py')], cwd=work / 'old',
                         capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': str(work / 'old')}, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.fixture(scope='module')
def pair(tmp_path_factory):
    work = tmp_path_factory.mktemp('fingerprints')
    before = fingerprints_before(work)
    if before is None:
        if cpu_facts()['cpu_flags'] != GOLD['cpu_flags']:
            pytest.skip(f"no git history for {BEFORE}, and this CPU's flags {cpu_facts()['cpu_flags']} differ from the "
                        f"golden file's {GOLD['cpu_flags']}: its bits cannot be expected here")
        before = GOLD['fingerprints']
    return before, fingerprints(work / 'now')


def test_golden_file_is_from_a_clean_commit():
    assert len(GOLD['commit']) == 40 and GOLD['sdr_dirty'] is False, GOLD['commit']


@pytest.mark.parametrize('key', sorted(GOLD['fingerprints']))
def test_bit_identical_to_before_the_redesign(pair, key):
    before, now = pair
    assert key in before and key in now, f'{key}: no longer computed'
    assert now[key] == before[key], f'{key} changed since {BEFORE}: {now[key]} != {before[key]}'


def test_nothing_new_is_unchecked(pair):
    before, now = pair
    assert set(now) == set(before) == set(GOLD['fingerprints'])
