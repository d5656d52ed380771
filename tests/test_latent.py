"""Latent diffusion (nbs/08_latent.ipynb): the paths the notebook does not run — a trainer that trains and saves its
own autoencoder and resumes from it, the learned map projection (proj='conv'), Improved DDPM on latents."""
import torch
import pytest

from sdr.core import assert_same_weights, make_generator
from sdr.config import preset
from sdr.data import load_dataset
from sdr.latent import (LatentSRDTrainer, autoencoder_hash, autoencoder_preset, load_autoencoder, train_autoencoder,
                        encode_images, decode_latents)


def _small(mechanism='reverse', **srd):
    cfg = preset('smoke')
    return cfg.replace(data=cfg.data.replace(max_images=256),
                       train=cfg.train.replace(steps=12, checkpoint_every=3, log_every=1),
                       srd=cfg.srd.replace(mechanism=mechanism, base_steps=6, cycle=3, n_real=64, n_generated=64, **srd))


@pytest.fixture(scope='module')
def images():
    torch.set_num_threads(1)
    return load_dataset(_small().data, 'train')[0]


@pytest.fixture(scope='module')
def ae(images):
    return train_autoencoder(images, cfg=autoencoder_preset('smoke', steps=60), generator=make_generator(3),
                             device='cpu', progress=False)[0]


def _same_weights(a, b):
    assert_same_weights(a.model, b.model, 'model'); assert_same_weights(a.ema.model, b.ema.model, 'EMA model')


def test_trainer_trains_saves_and_reuses_its_autoencoder(tmp_path, images):
    "No autoencoder passed: trained from the run's seed (deterministic), saved once, found again on resume."
    cfg, ae_cfg = _small(), autoencoder_preset('smoke', steps=20)
    straight = LatentSRDTrainer(cfg, tmp_path / 'a', ae_cfg=ae_cfg, images=images, device='cpu', progress=False).fit()
    assert (tmp_path / 'a' / 'autoencoder.pt').exists()
    again = LatentSRDTrainer(cfg, tmp_path / 'b', ae_cfg=ae_cfg, images=images, device='cpu', progress=False)
    assert again.autoencoder_hash == straight.autoencoder_hash          # same seed -> same autoencoder
    other_seed = LatentSRDTrainer(cfg.replace(seed=1), tmp_path / 'c', ae_cfg=ae_cfg, images=images, device='cpu', progress=False)
    assert other_seed.autoencoder_hash != straight.autoencoder_hash
    again.fit(until=4)                                                    # base phase; then a new process would resume
    resumed = LatentSRDTrainer(cfg, tmp_path / 'b', ae_cfg=ae_cfg, images=images, device='cpu', progress=False)
    assert resumed.resume() and resumed.step == 4
    resumed.fit()
    _same_weights(straight, resumed)
    ae, rec = load_autoencoder(tmp_path / 'a' / 'autoencoder.pt', device='cpu')
    assert rec['report']['steps'] == 20 and autoencoder_hash(ae) == straight.autoencoder_hash
    with pytest.raises(ValueError, match='was trained with'):
        LatentSRDTrainer(cfg, tmp_path / 'a', ae_cfg=ae_cfg.replace(steps=21), images=images, device='cpu')


def test_corrupted_autoencoder_file_is_refused(tmp_path, images, ae):
    LatentSRDTrainer(_small(), tmp_path, autoencoder=ae, images=images, device='cpu', progress=False)
    rec = torch.load(tmp_path / 'autoencoder.pt', weights_only=False)
    rec['state_dict']['scale'] = rec['state_dict']['scale'] * 2
    torch.save(rec, tmp_path / 'autoencoder.pt')
    with pytest.raises(ValueError, match='does not match the recorded'):
        LatentSRDTrainer(_small(), tmp_path, ae_cfg=ae.cfg, images=images, device='cpu')


def test_conv_projection_zero_lambda_and_resume(tmp_path, images, ae):
    "proj='conv' (learned M_emb on the latent grid): lambda_r=0 is the baseline; resume mid-refinement is exact."
    kw = dict(autoencoder=ae, images=images, device='cpu', progress=False)
    base = LatentSRDTrainer(_small('none'), tmp_path / 'base', **kw).fit()
    zero = LatentSRDTrainer(_small(proj='conv', lambda_r=0.0), tmp_path / 'zero', **kw).fit()
    assert [r['loss'] for r in zero.log] == [r['loss'] for r in base.log]
    assert_same_weights(base.model, zero.model, 'lambda_r=0 vs baseline', names=base.model.state_dict())
    conv = _small(proj='conv')
    straight = LatentSRDTrainer(conv, tmp_path / 'conv', **kw).fit()
    assert any('.map_proj.' in n for n, _ in straight.model.named_parameters())
    assert not torch.equal(straight.model.stem.weight, base.model.stem.weight)
    LatentSRDTrainer(conv, tmp_path / 'conv_split', **kw).fit(until=8)
    resumed = LatentSRDTrainer(conv, tmp_path / 'conv_split', **kw).fit()
    assert_same_weights(straight.model, resumed.model, 'resumed')


def test_improved_ddpm_on_latents(tmp_path, images, ae):
    "Cosine schedule + learned variance (hybrid loss) trains on latents; samples decode to images in [-1, 1]."
    cfg = _small()
    cfg = cfg.replace(diffusion=cfg.diffusion.replace(schedule='cosine', learn_sigma=True))
    tr = LatentSRDTrainer(cfg, tmp_path, autoencoder=ae, images=images, device='cpu', progress=False).fit()
    assert tr.model.out_channels == 2 * ae.cfg.latent_channels
    assert all('vlb' in r for r in tr.log) and all(torch.isfinite(torch.tensor(r['loss'])) for r in tr.log)
    x = tr.sample(4, steps=5, sampler='ddim')
    assert x.shape == (4, 1, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert tr.sample(2, sampler='ddpm').shape == (2, 1, 16, 16)
    assert tr.eval_loss(images[:64]) > 0


def test_latents_are_the_trainers_batches(tmp_path, images, ae):
    "batch(step) = scaled latents of the pixel trainer's batch at that step (same DataOrder)."
    tr = LatentSRDTrainer(_small(), tmp_path, autoencoder=ae, images=images, device='cpu', progress=False)
    idx = tr.order.indices(5)
    z5, kw = tr.batch(5)
    assert torch.equal(z5, encode_images(ae, images[idx])) and kw == {}
    z = tr.batch(0)[0]
    assert decode_latents(ae, z).shape == (len(z), 1, 16, 16)


def test_autoencoder_from_the_experiment_config(tmp_path, images, ae):
    "cfg.autoencoder selects latent diffusion (what the grid runner uses); a conflicting ae_cfg is refused."
    cfg = _small().replace(autoencoder=ae.cfg)
    tr = LatentSRDTrainer(cfg, tmp_path / 'c', autoencoder=ae, images=images, device='cpu')
    assert tr.ae_cfg == ae.cfg and tr.model.in_channels == ae.cfg.latent_channels
    with pytest.raises(ValueError, match='differs from cfg.autoencoder'):
        LatentSRDTrainer(cfg, tmp_path / 'd', ae_cfg=ae.cfg.replace(width=8), images=images, device='cpu')


def test_a_reseeded_refinement_draws_its_own_data_order(tmp_path, images, ae):
    "refine_seed: refinement batches come from SRD's refinement order (`batch_indices`), as for the pixel trainer."
    cfg = _small(refine_seed=100)
    tr = LatentSRDTrainer(cfg, tmp_path, autoencoder=ae, images=images, device='cpu', progress=False)
    b = cfg.srd.base_steps
    assert torch.equal(tr.batch_indices(b - 1), tr.order.indices(b - 1))            # base phase: the shared order
    assert torch.equal(tr.batch_indices(b), tr.refine_order.indices(b))
    assert not torch.equal(tr.refine_order.indices(b), tr.order.indices(b))
    assert torch.equal(tr.batch(b)[0], tr.latents[tr.refine_order.indices(b)])
