"Sampling-time guidance (nbs/10_guidance.ipynb): the hook changes nothing when unused, the peers' identities hold exactly."
import hashlib, math
import pytest
import torch
from sdr.core import assert_same_weights, make_generator
from sdr.config import preset
from sdr.data import load_dataset, to_model_range
from sdr.diffusion import GaussianDiffusion, cosine_betas, linear_betas
from sdr.runs import cpu_facts, train_base
from sdr.guidance import (Autoguidance, DiscriminatorConfig, DiscriminatorGuidance, GuidanceConfig, guide_trainer,
                          train_discriminator, validation_split)
from sdr.train import Trainer, base_config

torch.set_num_threads(1)

def _hash(t): return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]

# Samples of the samplers *before* the hook existed (main at 4435546, sdr/diffusion.py), on an analytic denoiser:
# the hook must leave them bit for bit as they were.
GOLDEN = {('linear', 'ddim', 0.0): '8b64879d6b0415bd', ('linear', 'ddim', 1.0): 'ec4a1449f77bb4ee',
          ('linear', 'ddpm', 0.0): 'd420abf587d41ef7', ('cosine', 'ddim', 0.0): 'e8a6d631cf526c59',
          ('cosine', 'ddim', 1.0): '7c6f86654728e7e5', ('cosine', 'ddpm', 0.0): '5d7b97d6061f5f20'}

def _oracle_setup(name):
    sigma = name == 'cosine'
    diff = GaussianDiffusion(linear_betas(200) if name == 'linear' else cosine_betas(100), learn_sigma=sigma)
    def oracle(x, t):
        ab = diff._gather('alphas_cumprod', t, x)
        eps = (x - ab.sqrt() * 0.4) / (1 - ab).sqrt() + 0.05 * torch.sin(3 * x)
        return torch.cat([eps, torch.tanh(x)], 1) if sigma else eps
    return diff, oracle

# Bits depend on the CPU's vector units: these hashes hold on AVX2-only CPUs (where they were recorded and CI passed),
# not on AVX-512/AMX ones (checked 2026-12-02: the code of the time gives other bits there too). Elsewhere only the
# identity below is checked; tests/test_redesign_identity.py compares the samplers with older code on any CPU.
GOLDEN_CPU_FLAGS = ['avx2']

def _sample(key, **kw):
    name, sampler, eta = key
    diff, oracle = _oracle_setup(name)
    return diff.sample(oracle, (3, 1, 4, 4), sampler=sampler, steps=7, eta=eta, generator=make_generator(11), **kw)

@pytest.mark.parametrize('key', sorted(GOLDEN))
def test_unused_hook_is_the_old_sampler_bit_for_bit(key):
    if cpu_facts()['cpu_flags'] != GOLDEN_CPU_FLAGS:
        pytest.skip(f"golden hashes hold on CPUs with flags {GOLDEN_CPU_FLAGS}; this one has {cpu_facts()['cpu_flags']}")
    assert _hash(_sample(key)) == GOLDEN[key]

@pytest.mark.parametrize('key', sorted(GOLDEN))
def test_identity_hook_changes_no_bit(key):
    assert torch.equal(_sample(key), _sample(key, guidance=lambda x, t, o: o))

@pytest.fixture(scope='module')
def models(tmp_path_factory):
    "A smoke model (60 steps) and its guide (the same training at step 20), with ε-only and learned-variance outputs."
    d = tmp_path_factory.mktemp('guidance')
    out = {}
    for sigma in (False, True):
        cfg = preset('smoke')
        cfg = cfg.replace(diffusion=cfg.diffusion.replace(learn_sigma=sigma))
        out[sigma] = (Trainer(cfg, d / f'good{sigma}', device='cpu', progress=False).fit(),
                      Trainer(cfg, d / f'bad{sigma}', device='cpu', progress=False).fit(until=20))
    return out

SAMPLERS = ['ddim', pytest.param('ddpm', marks=pytest.mark.slow)]   # ddpm: all T steps (the same hook call; slow)

@pytest.mark.parametrize('sigma', [False, True])
@pytest.mark.parametrize('sampler', SAMPLERS)
def test_autoguidance_weight_one_is_the_good_model_and_zero_the_guide(models, sigma, sampler):
    good, bad = models[sigma]
    kw = dict(seed=4, sampler=sampler, steps=6, eta=0.5)
    plain = good.sample(4, **kw)
    assert torch.equal(good.sample(4, guidance=Autoguidance(bad.ema.model, 1.0), **kw), plain)
    guided = good.sample(4, guidance=Autoguidance(bad.ema.model, 2.0), **kw)
    assert (guided - plain).abs().max() > 1e-3
    if not sigma:   # ε-only: w = 0 samples the guide itself (with learned variance the good model's variance is kept)
        assert torch.equal(good.sample(4, guidance=Autoguidance(bad.ema.model, 0.0), **kw), bad.sample(4, **kw))

@pytest.fixture(scope='module')
def discriminator(models):
    good, _ = models[False]
    real = to_model_range(load_dataset(good.cfg.data, 'train')[0][:256])
    fake = good.sample(256, seed=5, steps=5)
    return train_discriminator(real, fake, diffusion=good.diffusion, extractor=good.ema.model,
                               cfg=DiscriminatorConfig(epochs=2), generator=make_generator(0))

@pytest.mark.parametrize('sampler', SAMPLERS)
def test_discriminator_guidance_weight_zero_is_bit_identical(models, discriminator, sampler):
    good, _ = models[False]
    disc, _ = discriminator
    kw = dict(seed=4, sampler=sampler, steps=6, eta=0.5)
    plain = good.sample(4, **kw)
    assert torch.equal(good.sample(4, guidance=DiscriminatorGuidance(disc, good.diffusion, 0.0), **kw), plain)
    assert (good.sample(4, guidance=DiscriminatorGuidance(disc, good.diffusion, 2.0), **kw) - plain).abs().max() > 1e-4

def test_discriminator_correction_only_above_time_min(models, discriminator):
    good, _ = models[False]
    disc, _ = discriminator
    dg = DiscriminatorGuidance(disc, good.diffusion, 3.0, time_min=0.5)   # T = 200: t < 100 untouched
    x, out = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    got = dg(x, torch.tensor([10, 150]), out)
    assert torch.equal(got[0], out[0]) and not torch.equal(got[1], out[1])

def test_discriminator_heldout_accuracy_can_fail():
    "The report's held-out accuracy tells an easy artifact (~1) from no difference at all (~1/2)."
    cfg = preset('smoke')
    diff = GaussianDiffusion(linear_betas(200))
    real = to_model_range(load_dataset(cfg.data, 'train')[0][:2048])
    marked = real[1024:].clone(); marked[:, :, :8, :8] = 1.0          # a bright corner: visible at small t
    dc = DiscriminatorConfig(features='pixels', epochs=10, width=32)
    _, easy = train_discriminator(real[:1024], marked, diffusion=diff, cfg=dc, generator=make_generator(1))
    _, none = train_discriminator(real[:1024], real[1024:], diffusion=diff, cfg=dc, generator=make_generator(1))
    print(f"held-out accuracy: artifact {easy['accuracy']:.3f} (t < 66: {easy['accuracy_t_0_66']:.3f}), "
          f"real vs real {none['accuracy']:.3f}")
    assert easy['accuracy_t_0_66'] > 0.85 and easy['accuracy'] > 0.6
    assert abs(none['accuracy'] - 0.5) < 0.12

@pytest.mark.parametrize('bad', [-1.0, float('nan'), float('inf'), 'two', True, None])
def test_a_bad_weight_is_refused_naming_it(models, discriminator, bad):
    good, guide = models[False]
    with pytest.raises(ValueError, match=r'weight='):
        Autoguidance(guide.ema.model, bad)
    with pytest.raises(ValueError, match=r'weight='):
        DiscriminatorGuidance(discriminator[0], good.diffusion, bad)
    if bad is not None:
        with pytest.raises(ValueError, match=r'weights\[\]='):
            GuidanceConfig(weights=(1.0, bad))

def test_guide_lies_on_the_base_trajectory(tmp_path):
    "The guide (base config trained to step k) is the base's own state at k: resumed to the base's end it is the base, bit for bit."
    cfg = preset('smoke')
    base_ck = train_base(cfg, tmp_path / 'ex' / 'base')
    guide, info = guide_trainer(cfg, tmp_path, 'ex', 20)
    assert guide.step == 20 and info['guide_from'] == 'trained to its step'
    resumed = Trainer(base_config(cfg), guide.out_dir, device='cpu', progress=False).fit(until=cfg.srd.base_steps)
    base = torch.load(base_ck, map_location='cpu', weights_only=False)
    assert_same_weights(base['ema']['model'], resumed.ema.model, 'guide resumed to the base end vs base')
    # a base that kept its checkpoint at that step (in any experiment under the root) is used instead, at no cost
    from sdr.train import base_config_hash, save_checkpoint
    kept = tmp_path / 'e11' / f'base-{base_config_hash(cfg)}' / 'train' / 'checkpoints' / 'step-20.pt'
    save_checkpoint(Trainer(base_config(cfg), tmp_path / 'k20', device='cpu', progress=False).fit(until=20).state_dict(), kept)
    again, info2 = guide_trainer(cfg, tmp_path, 'e12', 20)
    assert info2 == {'guide_from': 'base checkpoint', 'guide_train_seconds': 0.0} and again.step == 20
    assert not (tmp_path / 'e12').exists() or not any((tmp_path / 'e12').glob('guide-*/train/checkpoints/last.pt'))
    with pytest.raises(ValueError, match='guide_step=31'):
        guide_trainer(cfg, tmp_path, 'ex', 31)   # past the base phase: not a base-phase checkpoint

def test_validation_split_is_fixed_and_disjoint():
    a, rest = validation_split(1000, 100)
    assert len(set(a.tolist()) & set(rest.tolist())) == 0 and len(a) + len(rest) == 1000
    assert torch.equal(a, validation_split(1000, 100)[0])
    with pytest.raises(ValueError, match='n_val=1000'):
        validation_split(1000, 1000)
