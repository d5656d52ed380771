"""The grid runner: SIGKILL mid-run, rerun, the same table; failures are recorded and the grid goes on."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest

from sdr.config import preset
from sdr.runs import EvalConfig
from sdr.tables import collect, summarize
from sdr.grid import run_grid

SCRIPT = """
import sys
from sdr.config import preset
from sdr.runs import EvalConfig
from sdr.grid import run_grid
c = preset('smoke')
c = c.replace(train=c.train.replace(steps=40, checkpoint_every=5))
cfgs = [c.replace(name=v, seed=0, srd=c.srd.replace(mechanism=m)) for v, m in (('baseline', 'none'), ('combined', 'combined'))]
run_grid('g', cfgs, root=sys.argv[1], ev=EvalConfig(n_samples=8, n_real=8, sample_steps=3, metric='none', heldout=64))
"""

def _grid(root, **kw):
    return subprocess.Popen([sys.executable, '-c', SCRIPT, str(root)], start_new_session=True,
                            env={**os.environ, 'OMP_NUM_THREADS': '1'}, **kw)

def _table(root):
    recs = collect(root, 'g')
    return {(r['name'], r['seed']): (r['heldout_loss'], r['steps']) for r in recs}

def test_sigkill_midrun_then_rerun_gives_the_same_table(tmp_path):
    ref = _grid(tmp_path / 'ref'); assert ref.wait(timeout=900) == 0
    expected = _table(tmp_path / 'ref')
    assert len(expected) == 2
    root = tmp_path / 'killed'
    p = _grid(root)
    # wait until the variant runs have started training (a checkpoint inside a run dir), then kill everything
    t0 = time.time()
    while not list(root.glob('g/[0-9a-f]*/train/checkpoints/last.pt')):
        assert time.time() - t0 < 600 and p.poll() is None, 'grid ended before it could be killed'
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    assert len(collect(root, 'g')) < 2, 'the kill came too late to test anything'
    rerun = _grid(root); assert rerun.wait(timeout=900) == 0
    assert _table(root) == expected
    summary = json.loads((root / 'g' / 'summary.json').read_text())
    assert not summary['failed']

def test_failed_run_is_recorded_and_grid_goes_on(tmp_path):
    c = preset('smoke')
    c = c.replace(train=c.train.replace(steps=12), srd=c.srd.replace(base_steps=0))
    good = c.replace(name='good')
    (tmp_path / 'empty').mkdir()   # exists (a missing folder is refused before any work), but the job finds no images
    bad = c.replace(name='bad', data=c.data.replace(dataset='folder', data_dir=str(tmp_path / 'empty')))
    s = run_grid('f', [bad, good], root=tmp_path, ev=EvalConfig(n_samples=4, n_real=4, sample_steps=2, metric='none',
                                                                  heldout=16), progress=False)
    assert [r['name'] for r in s['failed']] == ['bad'] and 'contains no images' in s['failed'][0]['error']
    assert [r['name'] for r in s['finished']] == ['good']
    assert len(collect(tmp_path, 'f')) == 1
    assert list((tmp_path / 'f').glob('*/error.json'))

def test_identical_runs_are_reused_across_experiments_and_finished_grids_train_nothing(tmp_path):
    c = preset('smoke')
    c = c.replace(train=c.train.replace(steps=16), srd=c.srd.replace(base_steps=8, cycle=4, n_real=64, n_generated=64))
    ev = EvalConfig(n_samples=4, n_real=4, sample_steps=2, metric='none', heldout=16)
    a = [c.replace(name='baseline'), c.replace(name='combined', srd=c.srd.replace(mechanism='combined'))]
    first = run_grid('a', a, root=tmp_path, ev=ev, progress=False)
    assert len(first['finished']) == 3   # one base + two runs
    # the same trainings under other names in another experiment, plus one new variant sharing the base
    b = [c.replace(name='plain'), c.replace(name='srd', srd=c.srd.replace(mechanism='combined')),
         c.replace(name='fwd', srd=c.srd.replace(mechanism='forward'))]
    second = run_grid('b', b, root=tmp_path, ev=ev, progress=False)
    assert sorted(r['name'] for r in second['reused'] if r['kind'] == 'run') == ['plain', 'srd']
    assert [r['name'] for r in second['finished']] == ['fwd']          # the base was reused, not retrained
    assert not list((tmp_path / 'b').glob('base-*'))
    recs = {r['name']: r for r in collect(tmp_path, 'b')}
    olds = {r['name']: r for r in collect(tmp_path, 'a')}
    assert recs['plain']['heldout_loss'] == olds['baseline']['heldout_loss'] and recs['plain']['reused_from'].startswith('a/')
    assert recs['srd']['heldout_loss'] == olds['combined']['heldout_loss']
    assert 'reused_from' not in recs['fwd'] and recs['fwd']['heldout_loss'] != recs['plain']['heldout_loss']
    # a grid whose runs are all finished trains nothing, not even its base (records travel without checkpoints)
    for ck in tmp_path.glob('*/*/train/checkpoints/last.pt'): ck.unlink()
    again = run_grid('a', a, root=tmp_path, ev=ev, progress=False)
    assert not again['finished'] and len(again['skipped']) == 2
