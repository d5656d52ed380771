"""Does the cpu-preset U-ViT learn at the U-Net's learning rate? Loss curves of short trainings, U-Net vs U-ViT at
three learning rates, on a validation split of the *training* images (the test set is never used to choose settings).

    .venv/bin/python bench/uvit_lr.py [--steps 300] [--threads 1] [--lrs 2e-4,1e-3,2e-3]

Each run: the cpu preset (batch 64, warm-up steps//10 up to 100, EMA 0.995), no SRD (base_steps 0); the diffusion loss
with fixed (t, eps) of the EMA and of the raw model on 1000 held-out training images at three points.
"""
import argparse, tempfile, time
import torch
from sdr.core import cpu_model
from sdr.config import preset
from sdr.uvit import uvit_preset
from sdr.train import Trainer
from sdr.data import load_dataset


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--steps', type=int, default=300)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--lrs', default='2e-4,1e-3,2e-3', help="the U-ViT's learning rates, comma-separated (the U-Net: 2e-4)")
    a = ap.parse_args()
    try: lrs = [float(x) for x in a.lrs.split(',')]
    except ValueError: raise SystemExit(f'--lrs={a.lrs!r}: expected comma-separated numbers, e.g. 2e-4,1e-3')
    if a.steps < 3 or not lrs or min(lrs) <= 0: raise SystemExit(f'--steps={a.steps} (>= 3) and --lrs={a.lrs!r} (each > 0) are required')
    torch.set_num_threads(a.threads)
    base = preset('cpu')
    train = load_dataset(base.data, 'train')[0]
    fit, val = train[:-2000], train[-2000:1000 - 2000]   # the last 2000 training images are held out; 1000 score
    vit = base.replace(uvit=uvit_preset('cpu'))
    runs = [('U-Net', base, 2e-4)] + [('U-ViT', vit, lr) for lr in lrs]
    print(f'CPU: {cpu_model()}; torch {torch.__version__}, {a.threads} thread(s); {a.steps} steps\n')
    print('| model | lr | ' + ' | '.join(f'step {s}: EMA / raw' for s in range(a.steps // 3, a.steps + 1, a.steps // 3))
          + ' | seconds |\n|---|---|' + '---|' * 4)
    with tempfile.TemporaryDirectory() as d:
        for k, (name, cfg, lr) in enumerate(runs):
            cfg = cfg.replace(train=cfg.train.replace(lr=lr, steps=a.steps, warmup_steps=min(100, a.steps // 10),
                                                      checkpoint_every=10 ** 6), srd=cfg.srd.replace(base_steps=0))
            tr = Trainer(cfg, f'{d}/{k}', device='cpu', images=fit, progress=False)
            t0, cells = time.time(), []
            for until in range(a.steps // 3, a.steps + 1, a.steps // 3):
                tr.fit(until=until)
                cells.append(f'{tr.eval_loss(val):.4f} / {tr.eval_loss(val, ema=False):.4f}')
            print(f'| {name} | {lr:g} | ' + ' | '.join(cells) + f' | {time.time() - t0:.0f} |', flush=True)


if __name__ == '__main__':
    main()
