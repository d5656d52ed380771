"The grid each preset runs under `make reproduce`: its own schedule and scoring, not the cpu preset's (issue 19)."
import shlex, subprocess
from pathlib import Path

import pytest
from papermill.cli import _resolve_type

from sdr.config import PRESET_GRIDS, grid_args, grid_settings, preset
from sdr.runs import EvalConfig
from sdr.experiments import scaled_preset

ROOT = Path(__file__).resolve().parent.parent


def papermill_parameters(*make_args) -> dict:
    "The parameters `make -n reproduce <make_args>` would hand the e01 notebook, resolved as papermill resolves them."
    out = subprocess.run(['make', '-n', 'reproduce', *make_args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if 'papermill' in l and 'e01_ablation.ipynb' in l)
    words = shlex.split(line[line.index('papermill'):line.index('; then')])
    import yaml
    params, yamls, pairs = {}, [], []
    for i, w in enumerate(words):
        if w == '-y': yamls.append(words[i + 1])
        if w == '-p': pairs.append((words[i + 1], words[i + 2]))
    for y in yamls: params.update(yaml.safe_load(y))   # papermill: -y first, then every -p in order (later wins)
    for k, v in pairs: params[k] = _resolve_type(v)
    return params


def notebook_configs(params: dict):
    "What e01's setup cell builds from its parameters: the base config and the evaluation."
    base = scaled_preset(params['preset_name'], steps=params.get('steps'), base_steps=params.get('base_steps'),
                         cycle=params.get('cycle'))
    return base, EvalConfig(n_samples=params['n_samples'], n_real=params['n_real'], sample_steps=params['sample_steps'],
                            metric=params['metric'])


def test_paper_preset_runs_the_papers_schedule():
    p = papermill_parameters('PRESET=paper')
    base, ev = notebook_configs(p)
    assert (base.train.steps, base.srd.base_steps, base.srd.cycle) == (500_000, 250_000, 100)
    assert (ev.n_samples, ev.sample_steps, base.sample.sampler) == (30_000, 1000, 'ddpm')   # 30k DDPM-1000 samples
    assert p['reports_dir'] == 'local/reports'   # not the committed cpu tables


def test_smoke_preset_runs_minutes_not_the_cpu_grid():
    p = papermill_parameters('PRESET=smoke')
    base, ev = notebook_configs(p)
    assert base.train.steps == preset('smoke').train.steps == 60 and base.srd.base_steps == 30
    assert (ev.n_samples, ev.metric) == (8, 'none')


def test_cpu_preset_keeps_the_committed_grid():
    p = papermill_parameters()   # PRESET unset: the committed tables' settings, written to the committed reports/
    assert p['preset_name'] == 'cpu' and p['reports_dir'] == 'reports'
    want = {'seeds': [0, 1, 2], 'workers': 2, 'steps': 1000, 'base_steps': 500, 'cycle': 50, 'n_samples': 500,
            'n_real': 2500, 'sample_steps': 50, 'metric': 'auto'}
    assert {k: p[k] for k in want} == want


def test_explicit_overrides_win_and_leave_the_committed_reports_alone():
    p = papermill_parameters('PRESET=paper', 'ARGS=-p steps 2000 -p base_steps 1000 -y "seeds: [4]"')
    base, ev = notebook_configs(p)
    assert (base.train.steps, base.srd.base_steps, p['seeds'], ev.n_samples) == (2000, 1000, [4], 30_000)
    p = papermill_parameters('ARGS=-p n_samples 64')
    assert p['n_samples'] == 64 and p['reports_dir'] == 'local/reports'


def test_every_preset_has_valid_grid_settings():
    assert set(PRESET_GRIDS) == {'smoke', 'cpu', 'fair', 'paper'}
    for name in PRESET_GRIDS:
        g = grid_settings(name)
        scaled_preset(name, steps=g['steps'], base_steps=g['base_steps'], cycle=g['cycle'])
        assert f"-p steps {g['steps']}" in grid_args(name)
    with pytest.raises(ValueError, match="name='gpu'"):
        grid_settings('gpu')
