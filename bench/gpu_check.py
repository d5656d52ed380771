"""A check for users with a GPU: a few hundred steps of the paper-sized U-Net (ADM-sized, 128x128 RGB, batch 8) with SRD
(combined, learned map projections) in bf16 autocast (fp16 with the gradient scaler where the GPU has no bf16), on random
images (no dataset needed). Prints a table: step time (base and refinement phase), peak GPU memory, training images/s,
DDIM sampling samples/s, SRD's own cost, and the lambda = 0 identity check (SRD with both weights 0 must train exactly
the baseline: same losses and weights).

    python bench/gpu_check.py [--steps 300] [--batch 8] [--precision bf16|fp16|fp32] [--preset paper]
    python bench/gpu_check.py --device cpu --preset smoke --steps 20    # the script itself, on a CPU (no GPU numbers)

Without CUDA (and without --device) it prints why and exits 0. It is a benchmark that prints, not a test; it exits 1 only
when the lambda = 0 identity check fails.
"""
import argparse, os, sys, tempfile, time
from pathlib import Path

os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')   # deterministic cuBLAS for the identity check (before CUDA starts)
import torch


def small_srd(cfg, *, steps, batch, precision, mechanism='combined', lam=None):
    "The preset at `steps` steps (half base), batch `batch`, SRD's side work shrunk (the model is the preset's)."
    s, h = cfg.srd, cfg.srd.highlighter
    srd = s.replace(mechanism=mechanism, proj='conv', base_steps=steps // 2, cycle=max(1, min(s.cycle, steps // 4)),
                    n_real=64, n_generated=64, mfam_batch=min(s.mfam_batch, 8), mfam_sample_steps=10,
                    highlighter_sample_steps=10, highlighter=h.replace(epochs=1, batch_size=min(h.batch_size, 16)))
    if lam is not None: srd = srd.replace(lambda_f=lam, lambda_r=lam)
    return cfg.replace(precision=precision, train=cfg.train.replace(steps=steps, batch_size=batch, checkpoint_every=10 ** 9,
                                                                    log_every=1, warmup_steps=min(cfg.train.warmup_steps, 10)),
                       srd=srd)


def random_images(cfg, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    c, s = cfg.data.channels, cfg.data.image_size
    return torch.randint(0, 256, (n, c, s, s), generator=g, dtype=torch.uint8)


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--preset', default='paper'); ap.add_argument('--steps', type=int, default=300)
    ap.add_argument('--batch', type=int, help="the global batch (default: the preset's)")
    ap.add_argument('--precision', choices=('bf16', 'fp16', 'fp32'), help='default: bf16, or fp16 where the GPU has no bf16')
    ap.add_argument('--device', help='default cuda; give cpu to run the script itself without a GPU')
    ap.add_argument('--identity-steps', type=int, default=6)
    a = ap.parse_args()
    if a.device is None and not torch.cuda.is_available():
        print('gpu_check: no CUDA device here (torch.cuda.is_available() is False), so there is nothing to measure; '
              'run it on a machine with a GPU (or pass --device cpu to exercise the script). Exiting.')
        return 0
    from sdr.core import resolve_precision
    from sdr.config import preset
    from sdr.train import SRDTrainer
    from sdr.unet import count_params
    device = torch.device(a.device or 'cuda')
    if a.steps < 8: raise SystemExit(f'--steps={a.steps}: need at least 8 (a base phase, a refinement phase, refreshes)')
    base = preset(a.preset)
    precision = a.precision or ('bf16' if device.type != 'cuda' or torch.cuda.is_bf16_supported() else 'fp16')
    precision = resolve_precision(precision, device)
    cfg = small_srd(base, steps=a.steps, batch=a.batch or base.train.batch_size, precision=precision)
    images = random_images(cfg, max(256, 4 * cfg.train.batch_size))
    tmp = Path(tempfile.mkdtemp(prefix='sdr_gpu_check_'))
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'
    print(f'gpu_check on {name}: preset {a.preset}, {cfg.data.image_size}x{cfg.data.image_size}x{cfg.data.channels}, batch '
          f'{cfg.train.batch_size}, {a.steps} steps ({cfg.srd.base_steps} base, mFAM every {cfg.srd.cycle}), {precision}, torch {torch.__version__}')

    tr = SRDTrainer(cfg, tmp / 'srd', device=device, images=images, progress=False)
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)
    times = {'base': [], 'refine': []}
    while tr.step < a.steps:
        refining = tr.step >= cfg.srd.base_steps
        refresh = refining and (tr.step - cfg.srd.base_steps) % cfg.srd.cycle == 0
        sync(device); t0 = time.perf_counter(); tr.train_step(); sync(device)
        if not refresh and tr.step > 3: times['refine' if refining else 'base'].append(time.perf_counter() - t0)  # steady steps only
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == 'cuda' else float('nan')
    n_s = 2 * cfg.train.batch_size
    sync(device); t0 = time.perf_counter(); tr.sample(n_s, steps=50, sampler='ddim', batch_size=n_s); sync(device)
    sample_rate = n_s / (time.perf_counter() - t0)
    med = lambda v: sorted(v)[len(v) // 2] if v else float('nan')

    # lambda = 0: SRD with both weights 0 trains the baseline exactly (same seed: same losses and weights)
    if device.type == 'cuda':
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.use_deterministic_algorithms(True, warn_only=True)
    k = a.identity_steps
    plain = SRDTrainer(small_srd(base, steps=k, batch=cfg.train.batch_size, precision=precision, mechanism='none'),
                       tmp / 'plain', device=device, images=images, progress=False).fit()
    zero = SRDTrainer(small_srd(base, steps=k, batch=cfg.train.batch_size, precision=precision, lam=0.0), tmp / 'zero',
                      device=device, images=images, progress=False).fit()
    d_loss = max(abs(x['loss'] - y['loss']) for x, y in zip(plain.log, zero.log))
    zs = zero.model.state_dict()
    d_w = max((p.float() - zs[n].float()).abs().max().item() for n, p in plain.model.state_dict().items())
    identical = d_loss == 0 and d_w == 0

    rows = [('parameters (U-Net)', f'{count_params(tr.model) / 1e6:.1f} M'),
            ('step time, base phase (median)', f'{med(times["base"]) * 1e3:.1f} ms'),
            ('step time, refinement (median, between refreshes)', f'{med(times["refine"]) * 1e3:.1f} ms'),
            ('training images/s (refinement)', f'{cfg.train.batch_size / med(times["refine"]):.1f}'),
            ('peak GPU memory (training)', f'{peak:.2f} GiB'),
            (f'DDIM-50 sampling, {n_s} samples', f'{sample_rate:.2f} samples/s'),
            ('SRD side work: highlighter / mFAM sampling / Grad-CAM', ' / '.join(f'{v:.1f} s' for v in tr.srd_seconds.values())),
            (f'lambda = 0 identity ({k} steps, across the phase boundary)',
             'identical (losses and weights)' if identical else f'DIFFERS: loss {d_loss:.2e}, weights {d_w:.2e}')]
    w = max(len(r[0]) for r in rows)
    print(f"\n| {'quantity'.ljust(w)} | value |\n|{'-' * (w + 2)}|---|")
    for r in rows: print(f'| {r[0].ljust(w)} | {r[1]} |')
    return 0 if identical else 1


if __name__ == '__main__':
    sys.exit(main())
