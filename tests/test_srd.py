"""SRD across model families: Improved DDPM (cosine, learned variance, hybrid loss) with every mechanism."""
import pytest
import torch

from sdr.core import assert_same_weights
from sdr.config import preset
from sdr.train import SRDTrainer


def _iddpm(mechanism, **srd):
    cfg = preset('smoke')
    return cfg.replace(diffusion=cfg.diffusion.replace(schedule='cosine', learn_sigma=True),
                       train=cfg.train.replace(steps=40), srd=cfg.srd.replace(mechanism=mechanism, **srd))


@pytest.mark.parametrize('mechanism', ['forward', 'reverse', 'combined'])
def test_iddpm_trains_with_srd(tmp_path, mechanism):
    tr = SRDTrainer(_iddpm(mechanism), tmp_path, device='cpu', progress=False).fit()
    assert tr.step == 40 and len(tr.mfam_history) == 1           # refreshed at 30 (cycle 10, refine 10 steps)
    assert all(torch.isfinite(torch.tensor(r['loss'])) for r in tr.log)
    assert 'vlb' in tr.log[-1] and tr.log[-1]['vlb'] > 0         # the hybrid loss is in play
    x = tr.sample(4, steps=5)
    assert x.shape == (4, 1, 16, 16) and x.abs().max() <= 1


def test_iddpm_lambda_zero_is_baseline(tmp_path):
    base = SRDTrainer(_iddpm('none'), tmp_path / 'b', device='cpu', progress=False).fit()
    zero = SRDTrainer(_iddpm('combined', lambda_f=0.0, lambda_r=0.0), tmp_path / 'z', device='cpu', progress=False).fit()
    assert [r['loss'] for r in base.log] == [r['loss'] for r in zero.log]
    assert_same_weights(base.model, zero.model, 'lambda=0 vs baseline', names=base.model.state_dict())


def test_srd_changes_training_when_lambda_positive(tmp_path):
    base = SRDTrainer(_iddpm('none'), tmp_path / 'b', device='cpu', progress=False).fit()
    srd = SRDTrainer(_iddpm('combined', lambda_f=0.5, lambda_r=0.5), tmp_path / 's', device='cpu', progress=False).fit()
    assert [r['loss'] for r in base.log][:3] == [r['loss'] for r in srd.log][:3]   # base phase identical
    assert not torch.equal(base.model.stem.weight, srd.model.stem.weight)           # refinement differs
