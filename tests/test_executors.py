"""run_grid through submitit (sdr.executors): the local executor stands in for SLURM. Same records and table as the local
pool, finished runs skipped without submitting, failures listed in the summary (issue 19)."""
import json

import pytest

from sdr.core import load_json
from sdr.executors import ClusterConfig, SubmititExecutor
from sdr.runs import EvalConfig
from sdr.experiments import report_experiment, scaled_preset, variant_configs
from sdr.grid import run_grid

VARIANTS = {'baseline': {'srd': {'mechanism': 'none'}}, 'combined': {'srd': {'mechanism': 'combined'}}}


@pytest.mark.slow
def test_submitit_local_executor_gives_the_local_pools_table(tmp_path):
    configs = variant_configs(scaled_preset('smoke'), VARIANTS, [0, 1])   # 2 seeds: 2 bases, 4 runs
    ev = EvalConfig(n_samples=8, n_real=8, sample_steps=3, metric='none', heldout=256)
    kw = dict(ev=ev, workers=2, threads=1, notebook=False, progress=False)
    pool = run_grid('e', configs, root=tmp_path / 'pool', **kw)
    ex = SubmititExecutor(ClusterConfig(cluster='local', folder=str(tmp_path / 'submitit'), timeout_min=30))
    assert ex.kind() == 'local'
    sub = run_grid('e', configs, root=tmp_path / 'sub', executor=ex, **kw)
    assert len(pool['finished']) == len(sub['finished']) == 6 and not pool['failed'] and not sub['failed']
    assert len(list((tmp_path / 'submitit').glob('*/*_result.pkl'))) == 6   # every job really went through submitit
    tables = [json.dumps(report_experiment(tmp_path / r, 'e', tmp_path / f'{r}-table' / 'e', order=list(VARIANTS), index=False)[0],
                         sort_keys=True) for r in ('pool', 'sub')]
    assert tables[0] == tables[1]                                     # the same table ...
    for c in configs:                                                 # ... from the same records, run by run
        from sdr.runs import run_dir_for
        a, b = (load_json(run_dir_for(tmp_path / r, 'e', c) / 'metrics.json') for r in ('pool', 'sub'))
        assert a['run_id'] == b['run_id'] and a['heldout_loss'] == b['heldout_loss'] and a['steps'] == b['steps']
    again = run_grid('e', configs, root=tmp_path / 'sub', executor=ex, **kw)   # a rerun submits nothing
    assert len(again['skipped']) == 4 and not again['finished']
    assert len(list((tmp_path / 'submitit').glob('*/*_result.pkl'))) == 6


@pytest.mark.slow
def test_a_failed_cluster_job_is_listed_in_the_summary(tmp_path):
    base = scaled_preset('smoke')
    broken = base.replace(data=base.data.replace(max_images=16))   # fewer images than a batch: the job fails when it starts
    ex = SubmititExecutor(ClusterConfig(cluster='local', folder=str(tmp_path / 'submitit'), timeout_min=10))
    s = run_grid('e', variant_configs(broken, VARIANTS, [0]), root=tmp_path / 'runs', executor=ex, notebook=False,
                 progress=False, ev=EvalConfig(n_samples=2, n_real=2, sample_steps=1, metric='none', heldout=8))
    assert not s['finished'] and {r['kind'] for r in s['failed']} == {'base', 'run'}
    assert 'batch_size=32 is larger than the dataset' in next(r['error'] for r in s['failed'] if r['kind'] == 'base')
    assert load_json(tmp_path / 'runs' / 'e' / 'summary.json')['failed'] == s['failed']
