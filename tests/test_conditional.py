"""Conditional generation (notebook 08a): guidance and label dropout against the null-label prediction, unchanged run ids
and initial weights for unconditional configs, clear errors for bad configs, and a conditional run end to end."""
import hashlib, json
from pathlib import Path

import pytest
import torch

from sdr.core import assert_same_weights, differing_weights, make_generator, seeded_build
from sdr.config import ConditionalConfig, ExperimentConfig, config_hash, preset
from sdr.unet import build_unet
from sdr.conditional import (ConditionalTrainer, ConditionalUNet, GuidedDenoiser, build_conditional_unet,
                             class_balanced_labels, guided_output)
from sdr.train import base_config_hash

ROOT = Path(__file__).resolve().parent.parent
CCFG = preset('smoke').replace(conditional=ConditionalConfig())


def _trained_like(model, seed=1):
    "Perturb every weight: a fresh model's zero-initialised layers make every label give the same (zero) output."
    with torch.no_grad():
        for p in model.parameters(): p.add_(0.05 * torch.randn(p.shape, generator=make_generator(seed)))
    return model.eval()


@pytest.fixture(scope='module')
def model():
    return _trained_like(seeded_build(lambda: build_conditional_unet(CCFG)))


@pytest.fixture(scope='module')
def batch():
    g = make_generator(3)
    return torch.randn(6, 1, 16, 16, generator=g), torch.randint(0, 200, (6,), generator=g), torch.tensor([0, 1, 2, 7, 8, 9])


def test_guidance_zero_is_the_null_label_prediction(model, batch):
    x, t, y = batch
    with torch.no_grad():
        null = model(x, t, torch.full((6,), model.null_label))
        assert torch.equal(guided_output(model, x, t, scale=0.0, y=y), null)
        assert not torch.allclose(model(x, t, y), null)        # the labels do matter: the test could fail


def test_guidance_one_is_the_conditional_prediction(model, batch):
    x, t, y = batch
    with torch.no_grad():
        assert torch.equal(guided_output(model, x, t, scale=1.0, y=y), model(x, t, y))


def test_guided_interpolation_and_extrapolation(model, batch):
    x, t, y = batch
    with torch.no_grad():
        c, u = model(x, t, y), model(x, t)
        for s in (0.5, 2.0, 4.0):
            torch.testing.assert_close(guided_output(model, x, t, scale=s, y=y), u + s * (c - u), atol=1e-4, rtol=1e-4)


def test_dropped_label_is_the_null_label(model, batch):
    x, t, y = batch
    drop = torch.tensor([True, False, True, False, False, True])
    with torch.no_grad():
        out, null, cond = model(x, t, y, drop=drop), model(x, t), model(x, t, y)
    assert torch.equal(out[drop], null[drop]) and torch.equal(out[~drop], cond[~drop])


def test_label_dropout_in_training_is_a_function_of_the_step(tmp_path):
    cfg = CCFG.replace(conditional=ConditionalConfig(p_uncond=0.5))
    tr = ConditionalTrainer(cfg, tmp_path / 'a', device='cpu', progress=False)
    d1 = tr.batch(3)[1]['drop']
    assert not torch.equal(d1, tr.batch(4)[1]['drop'])
    assert torch.equal(d1, tr.batch(3)[1]['drop']) and 0 < d1.float().mean() < 1


def test_guided_denoiser_keeps_eval_mode(model, batch):
    from sdr.diffusion import GaussianDiffusion
    diff = GaussianDiffusion.from_config(CCFG.diffusion)
    diff.sample(GuidedDenoiser(model, scale=2.0, y=batch[2]), (6, 1, 16, 16), steps=2, generator=make_generator(0))
    assert not model.training


def test_unconditional_build_is_unchanged():
    "Seeded builds of the unconditional U-Net give the weights they gave before conditioning existed (hashes from main@9581459)."
    want = {'smoke': 'adbdb84e3779546c', 'cpu': 'e8acc9f190649a7a'}
    for name, h in want.items():
        m = seeded_build(lambda: build_unet(preset(name)), generator=make_generator(0))
        s = hashlib.sha256()
        for k, v in m.state_dict().items(): s.update(k.encode()); s.update(v.numpy().tobytes())
        assert s.hexdigest()[:16] == h, name
    # and the conditional model's U-Net starts from exactly those weights
    plain = seeded_build(lambda: build_unet(CCFG)); cond = seeded_build(lambda: build_conditional_unet(CCFG))
    assert_same_weights(plain, cond.unet, 'conditional U-Net at init', names=plain.state_dict())


def test_committed_run_ids_unchanged():
    "Every committed run record's config still hashes to its directory name."
    dirs = [p.parent for p in sorted((ROOT / 'reports' / 'runs').glob('*/*/config.json')) if not p.parent.name.startswith('base-')]
    assert dirs, 'no committed run records found'
    from sdr.guidance import GuidanceConfig
    for d in dirs:
        rec = json.loads((d / 'config.json').read_text())
        if 'guide' in rec:     # e12's autoguidance guide: its base's hash and step
            assert d.name == f"guide-{rec['guide']['base_config_hash']}-{rec['guide']['step']}", d
        elif 'guided' in rec:  # e12's guided run: its arm's run id and its guidance config's hash
            g = rec['guided']
            arm, gcfg = ExperimentConfig.from_dict(g['arm']), GuidanceConfig.from_dict(g['guidance'])
            assert d.name == f'guided-{config_hash(arm)}-{config_hash(gcfg)}', d
        else:
            cfg = ExperimentConfig.from_dict(rec['config'])
            assert config_hash(cfg) == d.name, d   # conditional records (e09) included: their field is hashed, others' not
    assert any(d.parent.name == 'e01_ablation' for d in dirs), 'the pre-0.3 records (e01) must be among them'


def test_base_shared_across_guidance_and_mfam():
    cfgs = [CCFG.replace(conditional=ConditionalConfig(guidance_scale=g, mfam=m), srd=CCFG.srd.replace(mechanism=mech, mfam_batch=10))
            for g in (1.0, 3.0) for m in ('global', 'per_class') for mech in ('none', 'combined')]
    assert len({base_config_hash(c) for c in cfgs}) == 1
    assert base_config_hash(CCFG) != base_config_hash(preset('smoke'))


@pytest.mark.parametrize('kw, msg', [
    ({'num_classes': 1}, 'num_classes=1 is out of range'),
    ({'cond_dim': -3}, 'cond_dim=-3 is out of range'),
    ({'p_uncond': 1.0}, 'p_uncond=1.0 is out of range'),
    ({'p_uncond': -0.1}, 'p_uncond=-0.1 is out of range'),
    ({'p_uncond': 0.0, 'guidance_scale': 3.0}, 'needs an unconditional model'),
    ({'guidance_scale': -1.0}, 'guidance_scale=-1.0 is out of range'),
    ({'mfam': 'per_pixel'}, "mfam='per_pixel' is not allowed"),
])
def test_bad_conditional_config(kw, msg):
    with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace(')', r'\)').replace('[', r'\[').replace('.', r'\.')):
        ConditionalConfig(**kw)


def test_bad_combinations_and_inputs(model, batch):
    x, t, y = batch
    with pytest.raises(ValueError, match='mfam_batch >= num_classes'):
        CCFG.replace(conditional=ConditionalConfig(mfam='per_class'), srd=CCFG.srd.replace(mechanism='reverse'))
    with pytest.raises(ValueError, match=r'y has values in \[0, 11\]'):
        model(x, t, torch.tensor([0, 1, 2, 3, 4, 11]))
    with pytest.raises(ValueError, match='scale=-1 is out of range'):
        guided_output(model, x, t, scale=-1, y=y)
    p_uncond_zero = ConditionalConfig(p_uncond=0.0, guidance_scale=1.0)   # allowed: a purely conditional model, no guidance
    assert p_uncond_zero.guidance_scale == 1.0


def test_per_class_mfam_end_to_end(tmp_path):
    "A per-class combined run: one map per class, each example modulated by its class's map; lambda=0 is the baseline."
    cfg = CCFG.replace(conditional=ConditionalConfig(mfam='per_class'),
                       train=CCFG.train.replace(steps=16, checkpoint_every=8),
                       srd=CCFG.srd.replace(mechanism='combined', base_steps=8, cycle=4, mfam_batch=10, n_real=64, n_generated=64))
    srd = ConditionalTrainer(cfg, tmp_path / 'srd', device='cpu', progress=False).fit()
    assert srd.mfam.shape == (10, 1, 16, 16) and len(srd.mfam_history) == 2
    _, kw = srd.batch(15)
    assert torch.equal(srd.batch_map(kw), srd.mfam[kw['y']])
    base = ConditionalTrainer(cfg.replace(srd=cfg.srd.replace(mechanism='none')), tmp_path / 'base', device='cpu', progress=False).fit()
    zero = ConditionalTrainer(cfg.replace(srd=cfg.srd.replace(lambda_f=0.0, lambda_r=0.0)), tmp_path / 'zero', device='cpu', progress=False).fit()
    assert_same_weights(base.model, zero.model, 'lambda=0 vs baseline')
    assert differing_weights(base.model, srd.model)
    s = srd.sample(10, steps=2)
    assert s.shape == (10, 1, 16, 16) and s.min() >= -1 and s.max() <= 1


def test_run_experiment_records_class_metrics(tmp_path):
    from sdr.runs import EvalConfig, is_finished, make_trainer, run_dir_for, run_experiment
    cfg = CCFG.replace(train=CCFG.train.replace(steps=6, checkpoint_every=6), srd=CCFG.srd.replace(base_steps=0))
    assert isinstance(make_trainer(cfg, tmp_path / 'x'), ConditionalTrainer)
    ev = EvalConfig(n_samples=8, n_real=8, sample_steps=2, metric='none', heldout=32, n_per_class=2)
    run = run_dir_for(tmp_path, 'e', cfg)   # a record lives under its run id (is_finished checks the hash)
    m = run_experiment(cfg, run, ev=ev)
    assert m['conditional'] and 0 <= m['class_accuracy'] <= 1 and len(m['class_accuracy_per_class']) == 10
    assert m['classifier_test_accuracy'] > 0.5 and m['n_per_class'] == 2
    assert is_finished(run, 'run', ev) and not is_finished(run, 'run', ev.replace(n_per_class=3))


def test_sample_guides_each_batch_by_its_own_labels(tmp_path):
    "Trainer.sample's `sampling_model` hook: every batch is guided by the labels of its own rows, at the asked scale."
    from sdr.core import derive_seed
    tr = ConditionalTrainer(CCFG, tmp_path, device='cpu', progress=False)
    _trained_like(tr.ema.model)
    labels, sc = torch.tensor([3, 3, 1, 0, 9, 9, 2]), CCFG.sample
    got = tr.sample(7, steps=2, labels=labels, guidance_scale=0.5, batch_size=3)
    g = make_generator(derive_seed(CCFG.seed, 'sample', 0))
    want = torch.cat([tr.diffusion.sample(GuidedDenoiser(tr.ema.model, scale=0.5, y=labels[i:i + 3]), (min(3, 7 - i), 1, 16, 16),
                                          sampler=sc.sampler, steps=2, eta=sc.eta, generator=g, device='cpu')
                      for i in range(0, 7, 3)]).clamp(-1, 1)
    assert torch.equal(got, want)
    assert not torch.equal(got, tr.sample(7, steps=2, labels=labels.roll(1), guidance_scale=0.5, batch_size=3))
    assert torch.equal(tr.sample(10, steps=2), tr.sample(10, steps=2, labels=class_balanced_labels(10, 10)))
    with pytest.raises(ValueError, match=r'labels must be \(7,\) values in \[0, 9\]'):
        tr.sample(7, labels=torch.full((7,), 10))
