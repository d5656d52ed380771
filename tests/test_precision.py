"The precision switch: 'auto' resolution, bf16 autocast really in effect, fp32 unchanged, precision recorded."
import contextlib

import pytest
import torch

import sdr.core as core
from sdr.core import assert_same_weights, resolve_precision
from sdr.config import preset, config_hash
from sdr.train import Trainer


def _smoke(**kw):
    c = preset('smoke')
    return c.replace(train=c.train.replace(steps=3, log_every=1, checkpoint_every=3), srd=c.srd.replace(base_steps=3), **kw)


def _conv_dtypes(tr, fn):
    "dtypes of every Conv2d output of the trainer's model (and its EMA) while `fn` runs."
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
             for net in (tr.model, tr.ema.model) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    try: fn()
    finally:
        for h in hooks: h.remove()
    return set(seen)


@pytest.mark.parametrize('flags, speedup, expected', [
    ({'avx512f', 'avx512_bf16'}, 0.4, 'fp32'),          # AVX512-BF16 without AMX, bf16 measured slower (an earlier Zen 4)
    ({'avx512f', 'avx512_bf16'}, 1.05, 'fp32'),         # ... or not faster by BF16_MIN_SPEEDUP
    ({'avx512f', 'avx512_bf16'}, 1.6, 'bf16'),          # ... measured faster
    (set(), 1.6, 'fp32'),                                # no bf16 instructions: fp32 whatever a probe would say
    ({'avx512_bf16', 'amx_bf16', 'amx_tile'}, 0.4, 'bf16')])   # AMX: bf16 without a probe
def test_auto_on_cpu_follows_amx_then_the_measurement(monkeypatch, tmp_path, flags, speedup, expected):
    probed = []
    monkeypatch.setattr(core, 'cpu_flags', lambda: frozenset(flags))
    monkeypatch.setattr(core, 'bf16_speedup', lambda: probed.append(1) or speedup)
    assert resolve_precision('auto', 'cpu') == expected
    assert Trainer(_smoke(precision='auto'), tmp_path, device='cpu', progress=False).precision == expected
    assert bool(probed) == ('avx512_bf16' in flags and 'amx_bf16' not in flags)


def test_bf16_speedup_is_measured_once_and_cached(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(core, '_bf16_probe', lambda: calls.append(1) or 1.5)
    assert core.bf16_speedup(cache_dir=tmp_path) == 1.5
    assert core.bf16_speedup(cache_dir=tmp_path) == 1.5
    assert len(calls) == 1 and len(list((tmp_path / 'precision').glob('bf16-*.json'))) == 1
    (next((tmp_path / 'precision').glob('bf16-*.json'))).write_text('{broken')
    assert core.bf16_speedup(cache_dir=tmp_path) == 1.5 and len(calls) == 2   # a damaged entry is measured again


def test_bad_precision_is_refused():
    with pytest.raises(ValueError, match="precision='fp8' is not allowed"): _smoke(precision='fp8')
    with pytest.raises(ValueError, match="precision='fp16' on mps"): resolve_precision('fp16', 'mps')
    with pytest.raises(ValueError, match="precision='auto' is not allowed"): core.precision_context('auto')


def test_bf16_runs_convolutions_in_bf16_and_keeps_weights_fp32(tmp_path):
    tr = Trainer(_smoke(precision='bf16'), tmp_path / 'bf16', device='cpu', progress=False)
    assert tr.precision == 'bf16'
    assert _conv_dtypes(tr, tr.train_step) == {torch.bfloat16}
    assert _conv_dtypes(tr, lambda: tr.sample(4, steps=2)) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in tr.model.parameters())
    assert all(p.dtype == torch.float32 for p in tr.ema.model.parameters())
    assert tr.sample(4, steps=2).dtype == torch.float32
    fp = Trainer(_smoke(), tmp_path / 'fp32', device='cpu', progress=False)
    assert _conv_dtypes(fp, fp.train_step) == {torch.float32}
    assert _conv_dtypes(fp, lambda: fp.sample(4, steps=2)) == {torch.float32}


def test_fp32_is_bit_identical_to_no_precision_switch(tmp_path, monkeypatch):
    "precision='fp32' (the default) takes exactly the code path the trainer had before the setting existed."
    assert config_hash(_smoke(precision='fp32')) == config_hash(_smoke())
    a = Trainer(_smoke(), tmp_path / 'a', device='cpu', progress=False).fit()
    with monkeypatch.context() as m:
        m.setattr(Trainer, 'autocast', lambda self: contextlib.nullcontext())
        b = Trainer(_smoke(), tmp_path / 'b', device='cpu', progress=False).fit()
        sb = b.sample(4, steps=2)
    assert [r['loss'] for r in a.log] == [r['loss'] for r in b.log]
    assert_same_weights(a.model, b.model, 'fp32 vs no autocast')
    assert torch.equal(a.sample(4, steps=2), sb)


def test_bf16_training_stays_close_to_fp32(tmp_path):
    "bf16 autocast changes rounding only: the smoke run's losses agree with fp32 to a few per cent."
    a = Trainer(_smoke(), tmp_path / 'a', device='cpu', progress=False).fit()
    b = Trainer(_smoke(precision='bf16'), tmp_path / 'b', device='cpu', progress=False).fit()
    la, lb = [r['loss'] for r in a.log], [r['loss'] for r in b.log]
    assert la != lb                                  # bf16 really ran
    assert all(abs(x - y) / x < 0.05 for x, y in zip(la, lb)), (la, lb)


def test_run_experiment_records_the_resolved_precision(tmp_path, monkeypatch):
    from sdr.runs import EvalConfig, run_experiment
    from sdr.core import load_json
    ev = EvalConfig(n_samples=2, n_real=2, sample_steps=1, metric='none', heldout=8)
    monkeypatch.setattr(core, 'cpu_flags', lambda: frozenset({'avx2'}))     # no bf16 instructions: auto -> fp32
    m = run_experiment(_smoke(precision='auto'), tmp_path / 'auto', ev=ev, device='cpu')
    assert m['precision'] == 'fp32' and load_json(tmp_path / 'auto' / 'metrics.json')['precision'] == 'fp32'
    assert run_experiment(_smoke(precision='bf16'), tmp_path / 'bf16', ev=ev, device='cpu')['precision'] == 'bf16'


def _first_grads_and_update(tr, steps=3):
    "The gradients the optimizer steps with at the first step (after unscaling and clipping), and |theta_k - theta_0|."
    th0 = torch.cat([p.detach().flatten().clone() for p in tr.model.parameters()])
    tr.train_step()
    g = torch.cat([p.grad.flatten().clone() for p in tr.model.parameters()])
    for _ in range(steps - 1): tr.train_step()
    return g, (torch.cat([p.detach().flatten() for p in tr.model.parameters()]) - th0).norm().item()


def _fp16_matches_fp32(tr16, g32, d32) -> bool:
    "fp16 with its scaler steps with fp32's gradients (to 1 %) and moves the weights as far (to 10 %)."
    g16, d16 = _first_grads_and_update(tr16)
    return bool((g16 - g32).norm() / g32.norm() < 0.01) and abs(d16 / d32 - 1) < 0.10


def test_fp16_every_backward_goes_through_the_scaler(tmp_path):
    """fp16 with a GradScaler: the loss is scaled before every backward, so after `unscale_` the optimizer sees the true
    gradients and the updates match fp32's. The u-vit fork's pattern (a bare `backward()` while the optimizer steps
    through the scaler) unscales never-scaled gradients: 65536x too small, AdamW's steps shrink; the same check fails."""
    g32, d32 = _first_grads_and_update(Trainer(_smoke(), tmp_path / 'fp32', device='cpu', progress=False))
    ours = Trainer(_smoke(precision='fp16'), tmp_path / 'fp16', device='cpu', progress=False)
    assert ours.precision == 'fp16' and ours.scaler.is_enabled() and ours.scaler.get_scale() == 65536.0
    calls, scale = [], ours.scaler.scale
    ours.scaler.scale = lambda loss: calls.append(1) or scale(loss)
    assert _fp16_matches_fp32(ours, g32, d32)
    assert len(calls) == 3   # one scaled backward per step
    fork = Trainer(_smoke(precision='fp16'), tmp_path / 'fork', device='cpu', progress=False)
    scale = fork.scaler.scale
    fork.scaler.scale = lambda loss: (scale(loss), loss)[1]   # the fork: the scaler is set up, the backward is bare
    assert not _fp16_matches_fp32(fork, g32, d32)
    assert Trainer(_smoke(), tmp_path / 'fp32b', device='cpu', progress=False).scaler.is_enabled() is False


def test_fp16_runs_in_fp16_and_resumes_its_scaler(tmp_path):
    "Convolutions run in fp16 (weights stay fp32), and the scaler's state travels in the checkpoint (exact resume)."
    tr = Trainer(_smoke(precision='fp16'), tmp_path / 'a', device='cpu', progress=False)
    assert _conv_dtypes(tr, tr.train_step) == {torch.float16}
    assert all(p.dtype == torch.float32 for p in tr.model.parameters())
    tr.scaler.update(1024.0)   # a scale that differs from the initial one
    tr.save()
    again = Trainer(_smoke(precision='fp16'), tmp_path / 'a', device='cpu', progress=False)
    assert again.resume() and again.scaler.get_scale() == 1024.0
    assert 'scaler' not in Trainer(_smoke(), tmp_path / 'b', device='cpu', progress=False).state_dict()   # fp32 checkpoints as before
