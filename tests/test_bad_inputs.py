"""Issue 20: a sweep of bad inputs through the API and papermill. Every one must be rejected *before any work* (no
training, no checkpoint, no new record) with a message naming the parameter or file.
`python tests/test_bad_inputs.py` prints the sweep as a table; pytest runs each case (papermill cases are slow-marked)."""
import contextlib, io, json, math, os, subprocess, sys, tempfile
from pathlib import Path

import pytest

from sdr.config import preset
from sdr.core import load_json, save_json
from sdr.config import ExperimentConfig, config_hash
from sdr.runs import EvalConfig, StaleRecord, base_dir_for, is_finished, run_dir_for
from sdr.grid import find_finished_elsewhere, run_grid, run_job, save_summary
from sdr.experiments import report_experiment, scaled_preset, variant_configs, with_data_dir, with_overrides
from sdr.train import base_config, load_checkpoint, save_checkpoint

_c = preset('smoke')
SM = _c.replace(train=_c.train.replace(steps=12, checkpoint_every=4),
                srd=_c.srd.replace(base_steps=6, cycle=3, n_real=64, n_generated=64))
EV = EvalConfig(n_samples=4, n_real=4, sample_steps=2, metric='none', heldout=16)
OV = lambda ov: with_overrides(SM, ov)
EVD = EV.to_dict()

def grid(root, cfgs, **kw):
    kw = {'ev': EV, 'notebook': False, 'progress': False, **kw}
    return run_grid(kw.pop('experiment', 'x'), cfgs, root=root, **kw)

def fake_record(root, experiment, cfg, metrics=None, config=None):
    "A finished run record written by hand (no training), as a committed record travels."
    d = run_dir_for(root, experiment, cfg)
    save_json({'config': (config or cfg).to_dict(), 'eval': EVD}, d / 'config.json')
    m = {'run_id': config_hash(cfg), 'name': cfg.name, 'seed': cfg.seed, 'heldout_loss': 0.5, 'steps': cfg.train.steps}
    save_json({**m, **(metrics or {})} if metrics is not False else m, d / 'metrics.json')
    return d

def records(root, rows, experiment='x'):
    "Records for a table: rows of (name, seed, metrics)."
    for name, seed, m in rows: fake_record(root, experiment, SM.replace(name=name, seed=seed), m)
    return root

def table(root, **kw):
    return report_experiment(root, 'x', Path(root) / 'tables' / 't', order=['baseline', 'forward'], index=False, **kw)

def truncate(p):
    p = Path(p); p.write_text(p.read_text()[: len(p.read_text()) // 2]); return p

def elsewhere_edited(root):
    "Another experiment's record whose config.json was edited (lambda_r 0.025 -> 5.0) is not reused, and a warning says so."
    orig = SM.replace(srd=SM.srd.replace(mechanism='reverse', lambda_r=0.025))
    asked = orig.replace(srd=orig.srd.replace(lambda_r=5.0))
    fake_record(root, 'other', orig, config=asked)
    err = io.StringIO()
    with contextlib.redirect_stderr(err): hit = find_finished_elsewhere(Path(root), 'x', 'run', asked, EV)
    if hit is None: raise ValueError(err.getvalue())
    return hit

def own_edited(root):
    orig = SM.replace(srd=SM.srd.replace(mechanism='reverse', lambda_r=0.025))
    fake_record(root, 'x', orig, config=orig.replace(srd=orig.srd.replace(lambda_r=5.0)))
    grid(root, [orig])

def own_garbage(root):
    d = fake_record(root, 'x', SM)
    save_json({'config': {'name': 'baseline', 'nonsense': 1}, 'eval': EVD}, d / 'config.json')
    grid(root, [SM])

def base_edited(root):
    d = base_dir_for(root, 'x', SM)
    save_json(base_config(SM).replace(seed=5).to_dict(), d / 'config.json'); save_json({'step': 6}, d / 'done.json')
    is_finished(d, 'base', EV)

def truncated_metrics_grid(root):
    truncate(fake_record(root, 'x', SM) / 'metrics.json'); grid(root, [SM])

def truncated_config_grid(root):
    truncate(fake_record(root, 'x', SM) / 'config.json'); grid(root, [SM])

def truncated_summary(root):
    p = save_json({'history': []}, Path(root) / 'x' / 'summary.json'); truncate(p)
    save_summary(p, {'wall_seconds': 1.0})

def truncated_checkpoint(root):
    p = save_checkpoint({'step': 1, 'w': list(range(1000))}, Path(root) / 'ck' / 'last.pt')
    p.write_bytes(p.read_bytes()[:200]); load_checkpoint(p)

def folder_cfg(path): return SM.replace(data=SM.data.replace(dataset='folder', data_dir=str(path), channels=1))

def a_file(root):
    f = Path(root) / 'imgs.txt'; f.write_text('x'); return f

# (class, label, call(root), text the message must contain)
CASES = [
    # 0 or negative where a count is meant
    ('count', 'scaled_preset steps=0', lambda r: scaled_preset('smoke', steps=0), 'steps=0'),
    ('count', 'scaled_preset steps=-5', lambda r: scaled_preset('smoke', steps=-5), 'steps=-5'),
    ('count', 'scaled_preset cycle=0', lambda r: scaled_preset('smoke', cycle=0), 'cycle=0'),
    ('count', 'scaled_preset cycle=-1', lambda r: scaled_preset('smoke', cycle=-1), 'cycle=-1'),
    ('count', 'scaled_preset base_steps=-1', lambda r: scaled_preset('smoke', base_steps=-1), 'base_steps=-1'),
    ('count', 'train.steps=0', lambda r: OV({'train': {'steps': 0}}), 'steps=0'),
    ('count', 'train.batch_size=0', lambda r: OV({'train': {'batch_size': 0}}), 'batch_size=0'),
    ('count', 'train.checkpoint_every=0', lambda r: OV({'train': {'checkpoint_every': 0}}), 'checkpoint_every=0'),
    ('count', 'train.log_every=0', lambda r: OV({'train': {'log_every': 0}}), 'log_every=0'),
    ('count', 'train.warmup_steps=-1', lambda r: OV({'train': {'warmup_steps': -1}}), 'warmup_steps=-1'),
    ('count', 'srd.cycle=0', lambda r: OV({'srd': {'cycle': 0}}), 'cycle=0'),
    ('count', 'srd.mfam_batch=0', lambda r: OV({'srd': {'mfam_batch': 0}}), 'mfam_batch=0'),
    ('count', 'srd.n_real=0', lambda r: OV({'srd': {'n_real': 0}}), 'n_real=0'),
    ('count', 'srd.n_generated=1', lambda r: OV({'srd': {'n_generated': 1}}), 'n_generated=1'),
    ('count', 'srd.mfam_sample_steps=0', lambda r: OV({'srd': {'mfam_sample_steps': 0}}), 'mfam_sample_steps=0'),
    ('count', 'srd.highlighter_sample_steps=0', lambda r: OV({'srd': {'highlighter_sample_steps': 0}}), 'highlighter_sample_steps=0'),
    ('count', 'sample.steps=0', lambda r: OV({'sample': {'steps': 0}}), 'steps=0'),
    ('count', 'sample.n_samples=0', lambda r: OV({'sample': {'n_samples': 0}}), 'n_samples=0'),
    ('count', 'diffusion.timesteps=0', lambda r: OV({'diffusion': {'timesteps': 0}}), 'timesteps=0'),
    ('count', 'unet.base_channels=0', lambda r: OV({'unet': {'base_channels': 0}}), 'base_channels=0'),
    ('count', 'unet.num_heads=0', lambda r: OV({'unet': {'num_heads': 0}}), 'num_heads=0'),
    ('count', 'highlighter.epochs=0', lambda r: OV({'srd': {'highlighter': {'epochs': 0}}}), 'epochs=0'),
    ('count', 'data.max_images=0', lambda r: OV({'data': {'max_images': 0}}), 'max_images=0'),
    ('count', 'eval n_samples=0', lambda r: EvalConfig(n_samples=0), 'n_samples=0'),
    ('count', 'eval n_real=1', lambda r: EvalConfig(n_real=1), 'n_real=1'),
    ('count', 'eval sample_steps=0', lambda r: EvalConfig(sample_steps=0), 'sample_steps=0'),
    ('count', 'eval heldout=0', lambda r: EvalConfig(heldout=0), 'heldout=0'),
    ('count', 'run_grid workers=0', lambda r: grid(r, [SM], workers=0), 'workers=0'),
    ('count', 'run_grid workers=-2', lambda r: grid(r, [SM], workers=-2), 'workers=-2'),
    ('count', 'run_grid threads=0', lambda r: grid(r, [SM], threads=0), 'threads=0'),
    ('count', 'preset seed=-1', lambda r: preset('smoke', seed=-1), 'seed=-1'),
    # a mechanism with nothing to do
    *[('nothing to do', f'{m} with base_steps == steps', (lambda m: lambda r: grid(r, [OV({'srd': {'mechanism': m, 'base_steps': 12}})]))(m),
       'leaves no refinement steps') for m in ('forward', 'reverse', 'combined')],
    ('nothing to do', 'base_steps > steps', lambda r: OV({'srd': {'base_steps': 13}}), 'base_steps=13'),
    ('nothing to do', 'scaled_preset steps == base_steps, SRD variants', lambda r: grid(r, variant_configs(
        scaled_preset('smoke', steps=30), {'baseline': {}, 'forward': {'srd': {'mechanism': 'forward'}}}, [0])), 'base_steps=30'),
    # unknown parameters
    ('unknown', 'preset(steps=5)', lambda r: preset('smoke', steps=5), 'did you mean train.steps'),
    ('unknown', 'preset(trian=...)', lambda r: preset('smoke', trian={'steps': 5}), "trian={'steps': 5} is not a field"),
    ('unknown', 'preset(train={stepz})', lambda r: preset('smoke', train={'stepz': 5}), 'train.stepz=5 is not a field of TrainConfig; allowed'),
    ('unknown', "preset('smok')", lambda r: preset('smok'), "name='smok'"),
    ('unknown', 'with_overrides srd.lamda_f', lambda r: OV({'srd': {'lamda_f': 1}}), "no field 'lamda_f'"),
    ('unknown', 'with_overrides lr at top level', lambda r: OV({'lr': 1}), "no field 'lr'"),
    ('unknown', 'variant_configs srd.mechansim', lambda r: variant_configs(SM, {'a': {'srd': {'mechansim': 'forward'}}}, [0]), "no field 'mechansim'"),
    ('unknown', 'ExperimentConfig.from_dict extra key', lambda r: ExperimentConfig.from_dict({**SM.to_dict(), 'lambda_f': 1}), "unknown keys ['lambda_f']"),
    ('unknown', 'EvalConfig.from_dict extra key', lambda r: EvalConfig.from_dict({**EVD, 'fid': 1}), "unknown keys ['fid']"),
    ('unknown', "srd.mechanism='fwd'", lambda r: OV({'srd': {'mechanism': 'fwd'}}), "mechanism='fwd'"),
    ('unknown', "eval metric='fid'", lambda r: EvalConfig(metric='fid'), "metric='fid'"),
    ('unknown', "srd.forward_variant='adm'", lambda r: OV({'srd': {'forward_variant': 'adm'}}), "forward_variant='adm'"),
    ('unknown', "run_job kind='train'", lambda r: run_job('train', json.dumps(SM.to_dict()), str(r / 'j'), json.dumps(EVD)), "kind='train'"),
    ('unknown', 'data_dir for fashion_mnist', lambda r: with_data_dir(SM, '/data/x'), "data_dir='/data/x' given"),
    # duplicate grid entries, malformed grids
    ('duplicate', 'identical configs', lambda r: grid(r, [SM, SM]), 'duplicate grid entries'),
    ('duplicate', 'same (name, seed), other mechanism', lambda r: grid(r, [SM, OV({'srd': {'mechanism': 'forward'}})]), "name='smoke', seed=0"),
    ('duplicate', 'variant_configs seeds [0, 0]', lambda r: grid(r, variant_configs(SM, {'a': {}, 'b': {}}, [0, 0])), 'duplicate grid entries'),
    ('duplicate', 'empty grid', lambda r: grid(r, []), 'configs is empty'),
    ('duplicate', 'a dict in the grid', lambda r: grid(r, [SM.to_dict()]), 'configs[0] is a dict'),
    ('duplicate', "experiment='a/b'", lambda r: grid(r, [SM], experiment='a/b'), "experiment='a/b'"),
    ('duplicate', "experiment=''", lambda r: grid(r, [SM], experiment=''), "experiment=''"),
    ('duplicate', 'missing run notebook', lambda r: grid(r, [SM], notebook=r / 'nope.ipynb'), 'nope.ipynb'),
    # a finished record whose config no longer hashes to its directory
    ('stale record', 'own record edited (lambda_r)', own_edited, 'refusing to reuse it'),
    ('stale record', 'own record with an unreadable config', own_garbage, 'refusing to reuse it'),
    ('stale record', "another experiment's edited record", elsewhere_edited, 'not reused:'),
    ('stale record', 'base record edited', base_edited, 'refusing to reuse it'),
    # non-finite or missing metrics: no table
    ('metrics', 'NaN fid', lambda r: table(records(r, [('baseline', 0, {'fid': 10.0}), ('baseline', 1, {'fid': math.nan})])), 'lack a finite'),
    ('metrics', 'inf fid', lambda r: table(records(r, [('baseline', 0, {'fid': math.inf}), ('forward', 0, {'fid': 9.0})])), 'metrics.json'),
    ('metrics', 'one record without fid', lambda r: table(records(r, [('baseline', 0, {'fid': 10.0}), ('forward', 0, {})])), "lack a finite 'fid'"),
    ('metrics', 'fid as a string', lambda r: table(records(r, [('baseline', 0, {'fid': '10'}), ('forward', 0, {'fid': 9.0})])), "fid='10'"),
    ('metrics', 'heldout_loss NaN, no fid', lambda r: table(records(r, [('baseline', 0, {'heldout_loss': math.nan}), ('forward', 0, {})])), "'heldout_loss'"),
    ('metrics', 'class_accuracy missing in one', lambda r: table(records(r, [('baseline', 0, {'fid': 1.0, 'class_accuracy': 0.8}),
                                                                               ('forward', 0, {'fid': 1.0})]), metric='class_accuracy'), "'class_accuracy'"),
    ('metrics', 'no records at all', lambda r: table(r), 'no finished runs'),
    # truncated JSON names the file
    ('truncated', 'metrics.json (grid)', truncated_metrics_grid, 'metrics.json: not valid JSON'),
    ('truncated', 'config.json (grid)', truncated_config_grid, 'config.json: not valid JSON'),
    ('truncated', 'metrics.json (table)', lambda r: table(Path(truncate(fake_record(r, 'x', SM.replace(name='baseline')) / 'metrics.json')).parents[2]), 'metrics.json: not valid JSON'),
    ('truncated', 'summary.json', truncated_summary, 'summary.json: not valid JSON'),
    ('truncated', 'load_json', lambda r: load_json(truncate(save_json({'a': [1, 2, 3]}, r / 'a.json'))), 'a.json: not valid JSON'),
    ('corrupt checkpoint', 'truncated last.pt', truncated_checkpoint, 'last.pt cannot be read'),
    # data
    ('data', 'missing relative data folder', lambda r: grid(r, [folder_cfg('no/such/folder')]), "relative to the grid's working directory"),
    ('data', 'data_dir is a file', lambda r: grid(r, [folder_cfg(a_file(r))]), 'is not a folder'),
]

def no_work_done(root: Path) -> list:
    "What the call left that would be work: training folders, checkpoints, new run records, job logs."
    return [p for p in root.rglob('*') if p.name in ('train', 'job.log') or p.suffix == '.pt' and p.parent.name != 'ck'
            or p.name == 'metrics.json' and not (p.parent / 'config.json').exists()]

def check(case) -> str:
    kind, label, call, text = case
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        before = {p for p in root.rglob('*')}
        try:
            call(root)
        except (ValueError, TypeError, FileNotFoundError, NotADirectoryError) as e:
            msg = str(e)
        else:
            raise AssertionError(f'{label}: accepted')
        work = [p for p in no_work_done(root) if p not in before]
        assert not work, f'{label}: work was done before the rejection: {work}'
        assert text in msg, f'{label}: message does not say {text!r}: {msg[:400]}'
        return msg

@pytest.mark.parametrize('case', CASES, ids=[f'{c[0]}: {c[1]}' for c in CASES])
def test_bad_input_rejected_before_work(case):
    check(case)

def test_sweep_is_large_enough():
    assert len(CASES) + len(PAPERMILL) >= 60 and len({c[0] for c in CASES}) >= 8

# through papermill, as `make reproduce` passes them (each starts a kernel: slow)
E01 = Path(__file__).resolve().parent.parent / 'nbs' / 'experiments' / 'e01_ablation.ipynb'
RUN = E01.with_name('run.ipynb')
PAPERMILL = [
    ('unknown', '-p lambda_f 0.5', E01, ['-p', 'lambda_f', '0.5'], "unknown notebook parameter(s) ['lambda_f']"),
    ('unknown', 'run.ipynb -p knd base', RUN, ['-p', 'knd', 'base'], "unknown notebook parameter(s) ['knd']"),
    ('count', '-p steps 0', E01, ['-p', 'steps', '0'], 'steps=0'),
    ('count', '-p cycle 0', E01, ['-p', 'cycle', '0'], 'cycle=0'),
    ('count', '-p steps -5', E01, ['-p', 'steps', '-5'], 'steps=-5'),
    ('count', '-p workers 0', E01, ['-p', 'workers', '0'], 'workers=0'),
    ('nothing to do', '-p base_steps 60 (= the smoke steps)', E01, ['-p', 'base_steps', '60'], 'leaves no refinement steps'),
    ('unknown', '-p preset_name smok', E01, ['-p', 'preset_name', 'smok'], "name='smok'"),
    ('unknown', '-p metric fid', E01, ['-p', 'metric', 'fid'], "metric='fid'"),
    ('unknown', '-p data_dir with the fashion_mnist preset', E01, ['-p', 'data_dir', '/no/such'], "data_dir='/no/such' given"),
    ('duplicate', '-y seeds [0, 0]', E01, ['-y', 'seeds: [0, 0]'], 'duplicate grid entries'),
]

def check_papermill(case) -> str:
    kind, label, nb, args, text = case
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        extra = ['-p', 'root', str(root / 'runs'), '-p', 'reports_dir', str(root / 'rep')] if nb == E01 else ['-p', 'out_dir', str(root / 'runs')]
        p = subprocess.run([sys.executable, '-m', 'papermill', str(nb), str(root / 'out.ipynb'), '--log-output', '--no-progress-bar',
                            *extra, *args], capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'}, timeout=300)
        assert p.returncode != 0, f'{label}: accepted'
        assert text in p.stdout + p.stderr, f'{label}: message does not say {text!r}: {(p.stdout + p.stderr)[-1500:]}'
        work = no_work_done(root)
        assert not work, f'{label}: work was done before the rejection: {work}'
        return text

@pytest.mark.slow
@pytest.mark.parametrize('case', PAPERMILL, ids=[c[1] for c in PAPERMILL])
def test_bad_papermill_parameter_rejected_before_work(case):
    check_papermill(case)

if __name__ == '__main__':
    rows, ok = [], 0
    for c in CASES + PAPERMILL:
        try: msg = (check if len(c) == 4 else check_papermill)(c); ok += 1; res = 'rejected before work'
        except AssertionError as e: msg, res = str(e), 'NOT REJECTED'
        rows.append((c[0], ('papermill ' if len(c) == 5 else '') + c[1], res, msg.splitlines()[0][:150]))
    print('| class | input | result | message |\n|---|---|---|---|')
    for r in rows: print('| ' + ' | '.join(x.replace('|', '/') for x in r) + ' |')
    print(f'\n{ok} of {len(rows)} bad inputs rejected before work')
    sys.exit(0 if ok == len(rows) else 1)
