"""Does bf16 change the science? Held-out-loss curves of fp32 and bf16 training from one seed, overlaid on the
seed-to-seed spread of fp32, and the FD-domain of samples drawn in fp32 vs bf16 from the same final model.

    .venv/bin/python bench/bf16_curves.py [--steps 500] [--every 100] [--seeds 0 1 2] [--heldout 1000] [--threads 1]
                                          [--out bench/bf16_curves.png]

The cpu preset (16x16, 1.1 M-parameter U-Net, batch 64, EMA 0.995), shortened to `--steps` (stated in the output).
Every held-out loss is the EMA model's, on the same test images with the same fixed (t, eps), computed in fp32 for
both runs, so the curves compare training, not evaluation arithmetic. Arms: fp32 for every seed in `--seeds`, bf16
for the first seed. The bf16 run's gap to the fp32 run of its seed is set against the spread of the fp32 seeds.
"""
import argparse, json, os, statistics, tempfile, time, warnings

from sdr.torchvision_shim import patch_torchvision
patch_torchvision()   # before torchvision is imported (by torch-fidelity, diffusers, grad-cam) beside the CPU torch
import torch

from sdr.core import cpu_flags
from sdr.config import DataConfig, preset
from sdr.data import load_dataset
from sdr.train import Trainer


def curve(cfg, out, heldout, every):
    tr = Trainer(cfg, out, device='cpu', progress=False)
    pts, t0 = [], time.perf_counter()
    for until in range(every, cfg.train.steps + 1, every):
        tr.fit(until=until, resume=False)
        prec, tr.precision = tr.precision, 'fp32'       # evaluate every run in fp32
        pts.append((until, tr.eval_loss(heldout)))
        tr.precision = prec
    return tr, pts, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--steps', type=int, default=500); ap.add_argument('--every', type=int, default=100)
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2]); ap.add_argument('--heldout', type=int, default=1000)
    ap.add_argument('--threads', type=int, default=1); ap.add_argument('--samples', type=int, default=512)
    ap.add_argument('--out', default='bench/bf16_curves.png')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    base = preset('cpu')
    base = base.replace(train=base.train.replace(steps=a.steps), srd=base.srd.replace(base_steps=a.steps))
    heldout = load_dataset(base.data, 'test')[0][:a.heldout]
    print(f"cpu preset shortened to {a.steps} steps; amx_bf16={'amx_bf16' in cpu_flags()}, "
          f"avx512_bf16={'avx512_bf16' in cpu_flags()}; torch {torch.__version__}, {a.threads} thread(s)")
    curves, secs, trainers = {}, {}, {}
    with tempfile.TemporaryDirectory() as d:
        arms = [('fp32', a.seeds[0]), ('bf16', a.seeds[0])] + [('fp32', s) for s in a.seeds[1:]]
        for prec, seed in arms:
            k = f'{prec} seed {seed}'
            trainers[k], curves[k], secs[k] = curve(base.replace(seed=seed, precision=prec), f'{d}/{prec}{seed}', heldout, a.every)
            print(f'{k}: ' + ', '.join(f'{s}: {l:.5f}' for s, l in curves[k]) + f'  ({secs[k]:.0f} s incl. evaluation)', flush=True)
        ref, b = curves[f'fp32 seed {a.seeds[0]}'], curves[f'bf16 seed {a.seeds[0]}']
        fp = [curves[f'fp32 seed {s}'] for s in a.seeds]
        print('\n| step | bf16 - fp32 (same seed) | fp32 seed range (max - min) |\n|---|---|---|')
        for i, (s, l) in enumerate(ref):
            vals = [c[i][1] for c in fp]
            print(f'| {s} | {b[i][1] - l:+.5f} | {max(vals) - min(vals):.5f} |')
        # samples of one final model drawn in fp32 and in bf16, scored by FD-domain against the test set
        from sdr.fid import RankDeficientWarning, fid_from_features
        from sdr.inception import extract_features
        from sdr.fd_domain import load_domain_extractor
        warnings.simplefilter('ignore', RankDeficientWarning)
        dom = load_domain_extractor(base.data)
        real = extract_features(load_dataset(base.data, 'test')[0][:2000], dom, batch_size=1000)
        tr = trainers[f'fp32 seed {a.seeds[0]}']
        fd = {}
        for prec in ('fp32', 'bf16'):
            tr.precision = prec
            t0 = time.perf_counter(); x = tr.sample(a.samples, steps=25, batch_size=256); dt = time.perf_counter() - t0
            fd[prec] = (fid_from_features(real, extract_features(x, dom, batch_size=1000)), dt)
        print(f"\nFD-domain of {a.samples} DDIM-25 samples of the fp32 seed-{a.seeds[0]} model vs 2000 test images: "
              f"fp32 sampling {fd['fp32'][0]:.4f} ({fd['fp32'][1]:.1f} s), bf16 sampling {fd['bf16'][0]:.4f} ({fd['bf16'][1]:.1f} s)")
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, c in curves.items():
        ax.plot(*zip(*c), marker='o', ls='-' if k.startswith('fp32') else '--', lw=2 if k.startswith('bf16') else 1, label=k)
    ax.set_xlabel('training step'); ax.set_ylabel('held-out loss (EMA, fp32 eval)'); ax.set_yscale('log'); ax.legend()
    ax.set_title(f'cpu preset, {a.steps} steps: bf16 vs fp32 seed spread')
    fig.tight_layout(); fig.savefig(a.out, dpi=100)
    print(f'figure: {a.out}')


if __name__ == '__main__':
    main()
