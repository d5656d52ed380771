"The study's controls (notebook 05 and the SRD trainer): map controls, a reseeded refinement, sampling-time modulation."
import pytest
import torch

from sdr.config import preset
from sdr.train import SRDTrainer

def _cfg(**srd):
    c = preset('smoke')
    return c.replace(train=c.train.replace(steps=24, checkpoint_every=8), srd=c.srd.replace(base_steps=12, cycle=6, **srd))

@pytest.fixture(scope='module')
def images():
    from sdr.data import load_dataset
    return load_dataset(_cfg().data, 'train')[0]

def _fit(tmp_path, name, images, until=None, **srd):
    return SRDTrainer(_cfg(**srd), tmp_path / name, images=images, progress=False).fit(until=until)

def test_map_controls_keep_the_flaw_maps_mean_but_not_its_place(tmp_path, images):
    flaw = _fit(tmp_path, 'flaw', images, mechanism='reverse')
    uni = _fit(tmp_path, 'uniform', images, mechanism='reverse', map_control='uniform')
    perm = _fit(tmp_path, 'permuted', images, mechanism='reverse', map_control='permuted')
    # the first refresh sees the same model, samples and highlighter, so its maps are the flaw map's controls exactly
    m0, u0, p0 = (t.mfam_history[0]['mfam'] for t in (flaw, uni, perm))
    assert torch.allclose(u0, torch.full_like(m0, m0.mean().item()))
    assert torch.equal(torch.sort(p0.flatten()).values, torch.sort(m0.flatten()).values) and not torch.equal(p0, m0)
    assert m0.flatten().std() > 0
    # the recorded map statistics say what was used
    assert uni.mfam_history[0]['spread'] == 0.0 and flaw.mfam_history[0]['spread'] > 0
    assert abs(uni.mfam_history[0]['mean'] - flaw.mfam_history[0]['mean']) < 1e-6
    assert len(flaw.mfam_history) == 2 and {'peak', 'mean', 'spread'} <= set(flaw.mfam_history[1])

def test_controls_change_the_weights_of_the_refinement(tmp_path, images):
    flaw = _fit(tmp_path, 'flaw', images, mechanism='reverse', lambda_r=0.5)
    uni = _fit(tmp_path, 'uniform', images, mechanism='reverse', lambda_r=0.5, map_control='uniform')
    a, b = flaw.model.state_dict(), uni.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)

def test_untrained_highlighter_control(tmp_path, images):
    tr = _fit(tmp_path, 'untrained', images, mechanism='combined', map_control='untrained')
    assert tr.highlighter_report['untrained'] is True and tr.highlighter_report['accuracy'] is None
    fit = _fit(tmp_path, 'fitted', images, mechanism='combined')
    assert not torch.equal(tr.mfam_history[0]['mfam'], fit.mfam_history[0]['mfam'])

def test_reseeded_refinement_is_a_placebo_with_an_exact_resume(tmp_path, images):
    base = _fit(tmp_path, 'plain', images)
    placebo = _fit(tmp_path, 'placebo', images, refine_seed=1)
    at_boundary = [_fit(tmp_path, f'b{r}', images, until=12, **({} if r is None else {'refine_seed': r})) for r in (None, 1)]
    pa, pb = (t.model.state_dict() for t in at_boundary)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)                       # the base phase is untouched
    a, b = base.model.state_dict(), placebo.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)                      # the refinement is reseeded
    # killed mid-refinement and resumed: the same weights as one uninterrupted run
    part = _fit(tmp_path, 'resumed', images, until=18, refine_seed=1)
    resumed = SRDTrainer(_cfg(refine_seed=1), tmp_path / 'resumed', images=images, progress=False).fit()
    r = resumed.model.state_dict()
    assert part.step == 18 and all(torch.equal(r[k], b[k]) for k in b)

def test_sampling_time_modulation(tmp_path, images):
    tr = _fit(tmp_path, 'mod', images, mechanism='reverse', lambda_r=0.5, sample_modulation=True)
    modulated = tr.sample(4, seed=0)
    mfam = tr.mfam
    tr.mfam = None                                                          # no map: the hook falls back to plain sampling
    unmodulated = tr.sample(4, seed=0)
    tr.mfam = mfam
    assert not torch.equal(modulated, unmodulated)
    assert torch.equal(tr.sample(4, seed=0), modulated)                     # reproducible
    # compile=True falls back to the eager model under modulation (nothing compiles), so it draws the same samples
    assert torch.equal(tr.sample(4, seed=0, batch_size=4, compile=True), modulated)
    # and the model is restored after every sample (no modulation leaks into training)
    from sdr.unet import attention_blocks
    assert all(b.kv_modulation is None for b in attention_blocks(tr.ema.model))

def test_base_curve_records_a_plateau_without_changing_the_base(tmp_path):
    from sdr.runs import train_base
    from sdr.train import load_checkpoint
    import json
    c = _cfg().replace(srd=_cfg().srd.replace(base_steps=20))
    a = train_base(c, tmp_path / 'a', curve_every=10, heldout=64)
    b = train_base(c, tmp_path / 'b')
    curve = json.loads((tmp_path / 'a' / 'curve.json').read_text())
    assert [p['step'] for p in curve] == [10, 20] and all(p['heldout_loss'] > 0 for p in curve)
    sa, sb = load_checkpoint(a)['model'], load_checkpoint(b)['model']
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    train_base(c, tmp_path / 'a', curve_every=10, heldout=64)               # a rerun appends nothing
    assert json.loads((tmp_path / 'a' / 'curve.json').read_text()) == curve

def test_bases_only_grid_trains_the_bases_and_no_run_then_a_longer_base_continues_it(tmp_path):
    "The plateau gate's grid: bases only (no run directory), a no-op rerun writes nothing, a longer base continues."
    from sdr.runs import EvalConfig, base_dir_for
    from sdr.grid import run_grid
    from sdr.core import load_json
    ev = EvalConfig(n_samples=4, n_real=4, sample_steps=2, metric='none', heldout=32, base_curve_every=6)
    cfgs = [_cfg(mechanism='none').replace(name='baseline', seed=s) for s in (0, 1)]
    s = run_grid('x', cfgs, root=tmp_path, ev=ev, workers=2, notebook=False, progress=False, bases_only=True)
    assert len(s['finished']) == 2 and all(r['kind'] == 'base' for r in s['finished'])
    assert sorted(p.name[:5] for p in (tmp_path / 'x').iterdir() if p.is_dir()) == ['base-', 'base-']
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / 'x').rglob('*') if p.is_file()}
    again = run_grid('x', cfgs, root=tmp_path, ev=ev, workers=1, notebook=False, progress=False, bases_only=True)
    assert not again['finished'] and {p: p.stat().st_mtime_ns for p in (tmp_path / 'x').rglob('*') if p.is_file()} == before
    longer = [c.replace(train=c.train.replace(steps=30), srd=c.srd.replace(base_steps=18)) for c in cfgs]
    run_grid('x', longer, root=tmp_path, ev=ev, workers=1, notebook=False, progress=False, bases_only=True)
    for short, long in zip(cfgs, longer):
        done = load_json(base_dir_for(tmp_path, 'x', long) / 'done.json')
        assert done['step'] == 18 and done['extended_from'] == {'base': base_dir_for(tmp_path, 'x', short).name, 'step': 12}
        assert [p['step'] for p in load_json(base_dir_for(tmp_path, 'x', long) / 'curve.json')] == [6, 12, 18]

def test_runs_start_in_config_order_even_when_a_later_base_finishes_first(tmp_path):
    "The protocol's unit order survives bases that finish out of order (a fake executor: no training)."
    import threading, time
    from sdr.runs import EvalConfig
    from sdr.grid import run_grid
    started, lock = [], threading.Lock()
    class Fake:
        def execute(self, kind, c, out, **kw):
            if kind == 'base': time.sleep(0.8 if c.seed == 0 else 0.1)
            else:
                with lock: started.append((c.seed, c.srd.refine_seed))
                time.sleep(1.5)
            return {}
    base = _cfg(mechanism='none').replace(name='baseline')
    units = [(0, 0), (1, 0), (0, 1), (1, 1)]   # the protocol's order: base 0 first in every round
    cfgs = [base.replace(seed=b, srd=base.srd.replace(refine_seed=r)) for b, r in units]
    run_grid('x', cfgs, root=tmp_path, ev=EvalConfig(metric='none'), workers=2, notebook=False, progress=False, executor=Fake())
    # base 1 is done first and one of its runs takes the free worker; base 0's runs then go before base 1's second
    assert started == [(1, 0), (0, 0), (0, 1), (1, 1)], started
