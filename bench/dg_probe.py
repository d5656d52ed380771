"""Can DG's discriminator tell a base's samples from real images, and does DG move the validation FD? An exploratory
probe on one trained base (e.g. an e11 fair base), not a confirmatory result.

    python bench/dg_probe.py --base reports/runs/e11_controls/base-<hash> [--n 2048] [--epochs 10] [--val-samples 500]
                             [--weights 0 0.5 1 2] [--threads 1]

Loads the base's EMA model (its `train/checkpoints/last.pt`, whatever step it reached), draws `--n` samples (DDIM, the
preset's steps), fits the discriminator on them and `--n` real training images outside the validation split, prints
its held-out accuracy (overall and by noise level), then FD-domain against the validation split for each DG weight.
"""
import argparse, json, time, warnings
from pathlib import Path
import torch
from sdr.core import load_json, make_generator
from sdr.config import ExperimentConfig
from sdr.data import to_model_range
from sdr.runs import make_trainer
from sdr.guidance import DiscriminatorConfig, DiscriminatorGuidance, train_discriminator, tune_weight, validation_split
from sdr.train import load_checkpoint


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--base', required=True); ap.add_argument('--n', type=int, default=2048)
    ap.add_argument('--epochs', type=int, default=10); ap.add_argument('--val-samples', type=int, default=500)
    ap.add_argument('--n-val', type=int, default=5000)
    ap.add_argument('--weights', type=float, nargs='+', default=[0.0, 0.5, 1.0, 2.0]); ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    base = Path(a.base)
    cfg = ExperimentConfig.from_dict(load_json(base / 'config.json'))
    import tempfile
    tr = make_trainer(cfg, Path(tempfile.mkdtemp()) / 'probe', device='cpu')
    sd = load_checkpoint(base / 'train' / 'checkpoints' / 'last.pt')
    tr.load_state_dict(sd)
    steps = cfg.sample.steps
    t0 = time.time(); gen = tr.sample(a.n, seed=2, steps=steps); t_gen = time.time() - t0
    val_idx, rest_idx = validation_split(len(tr.images), a.n_val)
    g = make_generator(0)
    real = to_model_range(tr.images[rest_idx[torch.randperm(len(rest_idx), generator=g)[:a.n]]])
    disc, rep = train_discriminator(real, gen, diffusion=tr.diffusion, extractor=tr.ema.model,
                                    cfg=DiscriminatorConfig(epochs=a.epochs), generator=g)
    print(f"base {base.name} at step {sd['step']}; {a.n} samples (DDIM-{steps}) in {t_gen:.0f} s; discriminator fitted in "
          f"{rep['seconds']:.0f} s ({rep['steps']} steps), threads={a.threads}\n")
    print('| held-out | accuracy |\n|---|---|')
    for k in ('accuracy', 'auroc', *[k for k in rep if k.startswith('accuracy_t_')]): print(f'| {k} | {rep[k]:.3f} |')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        tu = tune_weight(lambda w: tr.sample(a.val_samples, seed=1, steps=steps, guidance=DiscriminatorGuidance(disc, tr.diffusion, w)),
                         a.weights, reference=tr.images[val_idx], data_cfg=cfg.data, real_key=f'probe-validation-{a.n_val}')
    print(f'\n| DG weight | FD-domain vs {a.n_val} validation images ({a.val_samples} samples) | sampling s |\n|---|---|---|')
    for r in tu['grid']: print(f"| {r['weight']:g} | {r['fd']:.3f} | {r['sample_seconds']:.0f} |")
    print(f"\nbest on validation: w = {tu['best']:g}")


if __name__ == '__main__':
    main()
