"""Trainer integration: real processes killed with SIGTERM and SIGKILL resume to bit-identical weights,
and a tiny model overfits a few images."""
import os, signal, subprocess, sys, time
from pathlib import Path

import torch
import pytest

from sdr.core import assert_same_weights
from sdr.config import preset
from sdr.data import load_dataset
from sdr.train import Trainer, load_checkpoint

STEPS = 24

def _cmd(out, steps=STEPS):
    return [sys.executable, '-m', 'sdr.train', '--preset', 'smoke', '--out', str(out), '--steps', str(steps),
            '--checkpoint-every', '4', '--max-images', '512', '--no-progress', '--device', 'cpu']

def _env():
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONHASHSEED': '0'}

def _run(out, steps=STEPS):
    subprocess.run(_cmd(out, steps), check=True, env=_env(), timeout=300, capture_output=True)
    return load_checkpoint(Path(out) / 'checkpoints' / 'last.pt')

def _wait_for_step(out, step, proc, timeout=120):
    ck = Path(out) / 'checkpoints' / 'last.pt'
    t0 = time.time()
    while time.time() - t0 < timeout:
        if ck.exists():
            try:
                if load_checkpoint(ck)['step'] >= step: return
            except Exception: pass  # being replaced right now
        if proc.poll() is not None: raise AssertionError(f'trainer exited early: {proc.returncode}')
        time.sleep(0.05)
    raise AssertionError('no checkpoint in time')

def _assert_identical(a, b):
    assert a['step'] == b['step']
    assert_same_weights(a['model'], b['model'], 'model'); assert_same_weights(a['ema']['model'], b['ema']['model'], 'EMA model')
    assert [r['loss'] for r in a['log']] == [r['loss'] for r in b['log']]

@pytest.fixture(scope='module')
def straight(tmp_path_factory):
    return _run(tmp_path_factory.mktemp('straight'))

@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGKILL])
def test_kill_and_resume_is_bit_identical(tmp_path, straight, sig):
    out = tmp_path / 'run'
    proc = subprocess.Popen(_cmd(out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_step(out, STEPS // 2, proc)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    killed_at = load_checkpoint(out / 'checkpoints' / 'last.pt')['step']
    assert STEPS // 2 <= killed_at < STEPS, f'kill landed at step {killed_at}'
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, proc.stderr.read().decode()[-2000:]
    _assert_identical(_run(out), straight)

def test_overfits_a_few_images(tmp_path):
    "A small model on 8 images: held-out-style loss on those images drops at least 10x."
    cfg = preset('smoke')
    cfg = cfg.replace(unet=cfg.unet.replace(base_channels=32, attention_resolutions=()),
                      diffusion=cfg.diffusion.replace(timesteps=100),
                      train=cfg.train.replace(steps=600, batch_size=8, lr=2e-3, warmup_steps=20, ema_decay=0.95,
                                              checkpoint_every=10_000))
    images = load_dataset(cfg.data, 'train')[0][:8]
    torch.set_num_threads(2)
    tr = Trainer(cfg, tmp_path, device='cpu', images=images, progress=False)
    before = tr.eval_loss(images.repeat(16, 1, 1, 1), ema=False)
    tr.fit()
    after = tr.eval_loss(images.repeat(16, 1, 1, 1), ema=False)
    print(f'loss before {before:.4f}, after {after:.4f} ({before / after:.1f}x)')
    assert after * 10 <= before

def _untrained(tmp_path):
    images = torch.zeros(64, 1, 16, 16, dtype=torch.uint8)
    return Trainer(preset('smoke'), tmp_path, device='cpu', images=images, progress=False)

def test_sample_rejects_a_bad_compile_value(tmp_path):
    with pytest.raises(ValueError, match='compile'): _untrained(tmp_path).sample(2, compile='yes')
    with pytest.raises(ValueError, match='compile'): preset('smoke').sample.replace(compile='yes').validate()

@pytest.mark.slow
def test_compiled_sampling_matches_eager(tmp_path):
    "compile=True: full batches through torch.compile (a C++ compiler needed, ~40 s), the last smaller batch eager."
    tr = _untrained(tmp_path)
    eager = tr.sample(9, seed=0, batch_size=4, steps=5)
    compiled = tr.sample(9, seed=0, batch_size=4, steps=5, compile=True)
    assert torch.allclose(compiled, eager, atol=1e-4)
    assert torch.equal(compiled[8:], eager[8:])                                 # the last batch of one ran eager
    assert len(tr._compiled_models) == 1
    assert torch.equal(tr.sample(9, seed=0, batch_size=4, steps=5, compile=True), compiled)   # cached, reproducible
