"""How many steps does the cpu-preset U-ViT need before its samples are recognisable? One training of the U-ViT at its
learning rate (`uvit_learning_rate`), scored at several steps, beside the U-Net at the cpu preset's 2000 steps for scale.
Validation only: held-out loss and FD-domain against held-out *training* images (the test set is never used).

    .venv/bin/python bench/uvit_schedule.py [--at 1000,2000,4000,7000] [--unet-steps 2000] [--threads 1]
                                            [--out bench/uvit_schedule.png]

Each model: the cpu preset (16x16 Fashion-MNIST, batch 64, EMA), no SRD (base_steps 0), one seed. At each step of --at:
the EMA's diffusion loss with fixed (t, eps) on 1000 held-out training images, and FD-domain of 500 DDIM-50 samples
against those 1000 images. The figure shows 32 samples (the same noise) of every row.
"""
import argparse, tempfile, time
import torch
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from sdr.core import cpu_model, cpu_flags
from sdr.config import preset
from sdr.uvit import uvit_learning_rate, uvit_preset
from sdr.train import Trainer
from sdr.data import image_grid, load_dataset
from sdr.metrics import compute_fid


def parse_steps(text: str) -> list[int]:
    try: steps = sorted({int(s) for s in text.split(',')})
    except ValueError: raise SystemExit(f'--at={text!r}: expected comma-separated step counts, e.g. 1000,2000,4000')
    if not steps or steps[0] < 1: raise SystemExit(f'--at={text!r}: every step must be >= 1')
    return steps


def score(tr: Trainer, val: torch.Tensor, data_cfg, n: int = 500) -> tuple[float, float, torch.Tensor]:
    "(held-out loss of the EMA, FD-domain of n DDIM-50 samples against val, the samples)."
    x = tr.sample(n, seed=0, sampler='ddim', steps=50)
    fd = compute_fid(x, real=val, real_key=f'fashion_mnist-train-last2000-first{len(val)}', data_cfg=data_cfg,
                     extractor='fd_domain', ci='none')['fd_domain']
    return tr.eval_loss(val), fd, x


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--at', default='1000,2000,4000,7000', help='the U-ViT steps at which it is scored (the last: its length)')
    ap.add_argument('--unet-steps', type=int, default=2000, help='the U-Net row for scale (0: none)')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--out', default='bench/uvit_schedule.png')
    a = ap.parse_args()
    at = parse_steps(a.at)
    if a.unet_steps < 0: raise SystemExit(f'--unet-steps={a.unet_steps}: expected >= 0 (0: no U-Net row)')
    torch.set_num_threads(a.threads)
    base = preset('cpu')
    train = load_dataset(base.data, 'train')[0]
    fit, val = train[:-2000], train[-2000:1000 - 2000]   # the last 2000 training images are held out; 1000 score
    vit = base.replace(uvit=uvit_preset('cpu'))
    flags = ' '.join(sorted(cpu_flags() & {'amx_bf16', 'avx512_bf16', 'avx512f', 'avx2'}))
    print(f'CPU: {cpu_model()} ({flags}); torch {torch.__version__}, {a.threads} thread(s), fp32\n')
    print('| model | lr | step | held-out loss (EMA) | FD-domain (500 vs 1000 validation) | train s (cumulative) |\n|---|---|---|---|---|---|')
    plans = ([('U-Net', base, 2e-4, [a.unet_steps])] if a.unet_steps else []) + [('U-ViT', vit, uvit_learning_rate('cpu'), at)]
    panels = []
    with tempfile.TemporaryDirectory() as d:
        for k, (name, cfg, lr, steps) in enumerate(plans):
            cfg = cfg.replace(train=cfg.train.replace(lr=lr, steps=steps[-1], checkpoint_every=10 ** 6),
                              srd=cfg.srd.replace(base_steps=0))
            tr = Trainer(cfg, f'{d}/{k}', device='cpu', images=fit, progress=False)
            for until in steps:
                tr.fit(until=until)
                loss, fd, x = score(tr, val, cfg.data)
                panels.append((f'{name} step {until}: FD {fd:.1f}', x[:32]))
                print(f'| {name} | {lr:g} | {until} | {loss:.4f} | {fd:.2f} | {tr.train_seconds:.0f} |', flush=True)
    fig, axs = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 1.6))
    for ax, (title, x) in zip(axs, panels):
        ax.imshow(image_grid(x, nrow=8).permute(1, 2, 0).squeeze(-1), cmap='gray', vmin=0, vmax=1)
        ax.set_title(title, fontsize=7); ax.axis('off')
    fig.tight_layout(); fig.savefig(a.out, dpi=150)
    print(f'\nsamples: {a.out}')


if __name__ == '__main__':
    main()
