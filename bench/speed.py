"""Speed of the three parts of a run, before vs after, side by side in one run: the cpu-preset training step
(fp32 eager vs bf16 autocast), DDIM sampling of the EMA model (batch 256: fp32 as before, fp32 channels-last, bf16
autocast) and the scoring features (FID Inception as torch-fidelity builds it vs our fast path; FD-domain), plus
the FID of the same images under both Inception paths.

    .venv/bin/python bench/speed.py [--threads 1] [--blocks 5] [--fid-n 256] [--compile]

`--compile` adds `torch.compile` (inductor, default mode) rows of the bf16 training step and of bf16 DDIM sampling;
their one-off compile time is printed apart (it is paid once per process and model, and the bench's medians leave it
out). Training never compiles; sampling does on request (`Trainer.sample(compile=True)`, `bench/sample_compile.py`).

Every comparison alternates its variants in `--blocks` blocks and reports the median, so that the load of a shared
machine hits all of them alike. The fair-scale preset uses the cpu preset's U-Net and batch at 16x16, so the
training row covers both. bf16 here is `sdr.core.precision_context('bf16')`, what `precision='bf16'` runs;
`auto` picks it only where the CPU has AMX-BF16 (see `sdr.core.resolve_precision`), which the header says.
"""
import argparse, copy, os, platform, statistics, tempfile, time, warnings

from sdr.torchvision_shim import patch_torchvision
patch_torchvision()   # before torchvision is imported (by torch-fidelity, diffusers, grad-cam) beside the CPU torch
import torch

from sdr.core import cpu_flags, precision_context, resolve_precision
from sdr.config import DataConfig, preset
from sdr.data import load_dataset, to_model_range
from sdr.train import Trainer
from sdr.fd_domain import load_domain_extractor
from sdr.fid import RankDeficientWarning, fid_from_features, kid_from_features
from sdr.inception import extract_features, load_fid_inception
from sdr.metrics import blur_images


def header() -> str:
    flags = cpu_flags()
    model = platform.processor()
    try: model = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): pass
    isa = ', '.join(f'{f} {"yes" if f in flags else "no"}' for f in ('amx_bf16', 'avx512_bf16', 'avx512f'))
    return (f'CPU: {model} ({os.cpu_count()} cores; {isa}); torch {torch.__version__}, {torch.get_num_threads()} threads; '
            f"precision='auto' resolves to {resolve_precision('auto', 'cpu')} here; load average {os.getloadavg()[0]:.2f}")


import contextlib
import torch.nn.functional as F
from einops import rearrange
from sdr.unet import SelfAttention


def _attention_in_autocast_dtype(self, x):
    "SelfAttention.forward before attention was pinned to fp32: SDPA in the autocast dtype (for the bench's 'before')."
    B, C, H, W = x.shape
    q, k, v = self.qkv(x)
    if self.kv_modulation is not None: k, v = self.kv_modulation(self, k, v, (H, W))
    out = F.scaled_dot_product_attention(q, k, v)
    out = self.proj(rearrange(out, 'b heads (h w) d -> b (h w) (heads d)', h=H, w=W))
    return x + rearrange(out, 'b (h w) c -> b c h w', h=H, w=W)


@contextlib.contextmanager
def bf16_attention():
    fwd = SelfAttention.forward
    SelfAttention.forward = _attention_in_autocast_dtype
    try: yield
    finally: SelfAttention.forward = fwd


def in_context(ctx, f):
    def g():
        with ctx(): return f()
    return g


def alternate(fns: dict, *, blocks: int, reps: int = 1) -> dict:
    "Median seconds per call of each function, timed in alternating blocks of `reps` calls (after one warm-up call each)."
    for f in fns.values(): f()
    times = {k: [] for k in fns}
    for _ in range(blocks):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(reps): f()
            times[k].append((time.perf_counter() - t0) / reps)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--blocks', type=int, default=5)
    ap.add_argument('--sample-batch', type=int, default=256)
    ap.add_argument('--sample-steps', type=int, default=2, help='DDIM steps per timed call (cost per step is reported)')
    ap.add_argument('--inception-n', type=int, default=32, help='images per timed Inception call (batch 32, as compute_fid)')
    ap.add_argument('--fid-n', type=int, default=256, help='generated and real images for the FID agreement check (0: skip)')
    ap.add_argument('--skip', nargs='*', default=[], choices=['train', 'sample', 'score', 'fid'])
    ap.add_argument('--compile', action='store_true', help='add torch.compile rows (bf16 training step, bf16 DDIM)')
    ap.add_argument('--channels-last', action='store_true', help='add channels-last training-step rows (fp32 and bf16)')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter('ignore', RankDeficientWarning)
    print(header(), '\n')
    rows = []   # (part, variant, seconds, unit, per)
    compile_s = {}   # part -> seconds of the first compiled call(s), compile included
    cfg = preset('cpu')
    x_test = load_dataset(DataConfig(image_size=16), 'test')[0]
    with tempfile.TemporaryDirectory() as d:
        tr = {p: Trainer(cfg.replace(precision=p), f'{d}/{p}', device='cpu', progress=False) for p in ('fp32', 'bf16')}
        if 'train' not in a.skip:
            fns = {'fp32': tr['fp32'].train_step, 'bf16': tr['bf16'].train_step,
                   'bf16 att': in_context(bf16_attention, tr['bf16'].train_step)}
            if a.compile:   # the forward is compiled in place, so parameter names (EMA, checkpoints) stay as they are
                tc = Trainer(cfg.replace(precision='bf16'), f'{d}/compiled', device='cpu', progress=False)
                tc.model.forward = torch.compile(tc.model.forward)
                t0 = time.perf_counter(); tc.train_step(); tc.train_step()
                compile_s['training step'] = time.perf_counter() - t0
                fns['bf16 compiled'] = tc.train_step
            if a.channels_last:   # the weights in channels-last; the convolutions then run (and return) NHWC
                for p in ('fp32', 'bf16'):
                    tcl = Trainer(cfg.replace(precision=p), f'{d}/cl-{p}', device='cpu', progress=False)
                    tcl.model.to(memory_format=torch.channels_last)
                    fns[f'{p} cl'] = tcl.train_step
            t = alternate(fns, blocks=a.blocks, reps=3)
            part = 'training step (cpu preset, batch 64)'
            rows += [(part, 'fp32 eager (before)', t['fp32'], 's/step', 1),
                     (part, 'bf16 autocast, attention in bf16', t['bf16 att'], 's/step', 1),
                     (part, 'bf16 autocast, attention in fp32 (after)', t['bf16'], 's/step', 1)]
            if a.compile: rows.append((part, 'bf16 autocast + torch.compile (training: not used)', t['bf16 compiled'], 's/step', 1))
            if a.channels_last:
                rows += [(part, 'fp32 channels-last (training: not used)', t['fp32 cl'], 's/step', 1),
                         (part, 'bf16 autocast, channels-last (training: not used)', t['bf16 cl'], 's/step', 1)]
        if 'sample' not in a.skip:
            ema = tr['fp32'].ema.model
            ema_cl = copy.deepcopy(ema).to(memory_format=torch.channels_last)
            diff = tr['fp32'].diffusion
            shape, n = (a.sample_batch, 1, 16, 16), a.sample_steps
            def run(model, prec):
                def f():
                    with precision_context(prec):
                        diff.sample(model, shape, steps=n, generator=torch.Generator().manual_seed(0))
                return f
            fns = {'fp32': run(ema, 'fp32'), 'cl': run(ema_cl, 'fp32'), 'bf16': run(ema, 'bf16'),
                   'bf16 att': in_context(bf16_attention, run(ema, 'bf16'))}
            if a.compile:
                ema_c = copy.deepcopy(ema); ema_c.forward = torch.compile(ema_c.forward)
                t0 = time.perf_counter(); run(ema_c, 'bf16')(); compile_s['DDIM sampling'] = time.perf_counter() - t0
                fns['bf16 compiled'] = run(ema_c, 'bf16')
            t = alternate(fns, blocks=a.blocks)
            part = f'DDIM sampling, batch {a.sample_batch} (per step)'
            rows += [(part, 'fp32 (before)', t['fp32'] / n, 's/step', a.sample_batch),
                     (part, 'fp32 channels-last', t['cl'] / n, 's/step', a.sample_batch),
                     (part, 'bf16 autocast, attention in bf16', t['bf16 att'] / n, 's/step', a.sample_batch),
                     (part, 'bf16 autocast, attention in fp32 (after)', t['bf16'] / n, 's/step', a.sample_batch)]
            if a.compile: rows.append((part, 'bf16 autocast + torch.compile (sample(compile=True))', t['bf16 compiled'] / n, 's/step', a.sample_batch))
    if 'score' not in a.skip or ('fid' not in a.skip and a.fid_n):
        exact, fast = load_fid_inception('cpu', fast=False), load_fid_inception('cpu')
    if 'score' not in a.skip:
        xb = x_test[:a.inception_n]
        t = alternate({'exact': lambda: extract_features(xb, exact, batch_size=32, device='cpu'),
                       'fast': lambda: extract_features(xb, fast, batch_size=32, device='cpu')}, blocks=a.blocks)
        part = 'FID Inception features (batch 32)'
        rows += [(part, "torch-fidelity's module (before)", t['exact'] / len(xb), 's/image', 1),
                 (part, 'BN folded + channels-last (after)', t['fast'] / len(xb), 's/image', 1)]
        dom = load_domain_extractor(DataConfig(image_size=16))
        xd = x_test[:1024]
        t = alternate({'fp32': lambda: extract_features(xd, dom, batch_size=1024, device='cpu')}, blocks=a.blocks)
        rows.append(('FD-domain features (batch 1024)', 'fp32', t['fp32'] / len(xd), 's/image', 1))
    ref = {}
    for part, variant, s, unit, per in rows: ref.setdefault(part, s)
    print('| part | variant | time | unit | speed-up vs before |\n|---|---|---|---|---|')
    for part, variant, s, unit, per in rows:
        val = f'{s * 1e3:.2f} ms' if s < 1 else f'{s:.3f} s'
        print(f'| {part} | {variant} | {val} | {unit.split("/")[1]} | {ref[part] / s:.2f}x |')
    for part, s in compile_s.items():
        print(f'\ntorch.compile, {part}: the first call(s) took {s:.0f} s (compile included; paid once per process and model)')
    if 'fid' not in a.skip and a.fid_n:
        n = a.fid_n
        x = to_model_range(x_test[:2 * n])
        real, gen = x[:n], blur_images(x[n:], 0.8)
        fe = {k: (extract_features(real, ex, device='cpu'), extract_features(gen, ex, device='cpu'))
              for k, ex in (('exact', exact), ('fast', fast))}
        fid = {k: fid_from_features(*v) for k, v in fe.items()}
        maxdiff = max((fe['fast'][i] - fe['exact'][i]).abs().max().item() for i in (0, 1))
        print(f'\nFID of the same {n} blurred vs {n} real test images: before {fid["exact"]:.5f}, after {fid["fast"]:.5f}, '
              f'relative change {100 * (fid["fast"] - fid["exact"]) / fid["exact"]:+.5f} % (goal: < 0.1 %); '
              f'max |feature change| {maxdiff:.1e}')
        # the same with KID (unbiased at any n)
        kid = {k: kid_from_features(*v, subsets=10, subset_size=min(n, 100), generator=torch.Generator().manual_seed(0))[0]
               for k, v in fe.items()}
        print(f'KID: before {kid["exact"]:.6f}, after {kid["fast"]:.6f}')


if __name__ == '__main__':
    main()
