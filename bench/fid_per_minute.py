"""Image quality per CPU-minute: our cpu-preset U-Net against a diffusers-default `UNet2DModel` of about the same
parameter count, trained for the same wall time on the same data, then sampled and scored alike.

    .venv/bin/python bench/fid_per_minute.py [--minutes 3] [--threads 1] [--n-samples 512] [--sample-steps 25]
                                             [--inception]

Both models train with the same loop (ε-MSE on q_sample with the cpu preset's linear schedule, AdamW lr 2e-4 with
100 warm-up steps, grad clip 1, EMA 0.995, batch 64 of Fashion-MNIST at 16×16, the same batches in the same order),
interleaved step by step so that the machine's load hits both alike; each stops when its own training time reaches
`--minutes`. Then `--n-samples` DDIM samples of each EMA model are scored by FD-domain against 2000 test images
(and, with `--inception`, by FID against as many test images: slow, about 0.3 s per image per thread).
diffusers is a bench-only dependency (`make bench` installs it).
"""
import argparse, copy, os, sys, time, warnings

from sdr.torchvision_shim import patch_torchvision
patch_torchvision()   # before torchvision is imported (by torch-fidelity, diffusers, grad-cam) beside the CPU torch
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import DiffusersEps   # noqa: E402  (the equal-size diffusers model of bench/train_step.py)

from sdr.core import cpu_flags, cpu_model, derive_seed, make_generator
from sdr.config import preset
from sdr.data import DataOrder, load_dataset, to_model_range
from sdr.diffusion import EMA, GaussianDiffusion
from sdr.unet import build_unet, count_params
from sdr.fd_domain import load_domain_extractor
from sdr.fid import RankDeficientWarning, fid_from_features
from sdr.inception import extract_features, load_fid_inception


class Arm:
    "One model with its optimizer, EMA and clock."
    def __init__(self, name, model, cfg):
        self.name, self.model, tc = name, model, cfg.train
        self.opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / max(tc.warmup_steps, 1)))
        self.ema, self.seconds, self.steps, self.losses = EMA(model, tc.ema_decay), 0.0, 0, []

    def step(self, diffusion, x0, t, eps, clip):
        t0 = time.perf_counter()
        loss = diffusion.training_losses(self.model, x0, t, noise=eps)['loss'].mean()
        self.opt.zero_grad(set_to_none=True); loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.opt.step(); self.sched.step(); self.ema.update(self.model)
        self.seconds += time.perf_counter() - t0; self.steps += 1; self.losses.append(loss.item())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--minutes', type=float, default=3.0); ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--n-samples', type=int, default=512); ap.add_argument('--sample-steps', type=int, default=25)
    ap.add_argument('--inception', action='store_true')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter('ignore', RankDeficientWarning)
    f = cpu_flags()
    print(f"CPU: {cpu_model()} (amx_bf16 {'amx_bf16' in f}, avx512_bf16 {'avx512_bf16' in f}); torch {torch.__version__}, "
          f"{a.threads} thread(s); {a.minutes:g} min of training per model, fp32\n")
    cfg = preset('cpu')
    size, u = cfg.data.image_size, cfg.unet
    torch.manual_seed(0); ours = build_unet(cfg)
    attn = {i for i in range(len(u.channel_mults)) if size // 2 ** i in u.attention_resolutions}
    torch.manual_seed(0); theirs = DiffusersEps(size, 1, (32, 64, 64), attn, layers=u.num_res_blocks, groups=u.groups)
    arms = [Arm('sdr UNet (cpu preset)', ours, cfg), Arm('diffusers UNet2DModel', theirs, cfg)]
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    images = load_dataset(cfg.data, 'train')[0]
    order = DataOrder(len(images), cfg.train.batch_size, seed=derive_seed(0, 'data'))
    g, budget, step = make_generator(derive_seed(0, 'noise')), 60 * a.minutes, 0
    while any(arm.seconds < budget for arm in arms):
        x0 = to_model_range(images[order.indices(step)])
        t = diffusion.sample_timesteps(len(x0), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        for arm in arms:
            if arm.seconds < budget: arm.step(diffusion, x0, t, eps, cfg.train.grad_clip)
        step += 1
    test = load_dataset(cfg.data, 'test')[0]
    dom = load_domain_extractor(cfg.data)
    real_dom = extract_features(test[:2000], dom, batch_size=1000)
    if a.inception:
        inc = load_fid_inception('cpu')
        real_inc = extract_features(test[:a.n_samples], inc)
    rows = []
    for arm in arms:
        t0 = time.perf_counter()
        x = torch.cat([diffusion.sample(arm.ema.model, (min(256, a.n_samples - i), 1, size, size), steps=a.sample_steps,
                                        generator=make_generator(derive_seed(0, 'sample', i)))
                       for i in range(0, a.n_samples, 256)]).clamp(-1, 1)
        ts = time.perf_counter() - t0
        fd = fid_from_features(real_dom, extract_features(x, dom, batch_size=1000))
        fid = fid_from_features(real_inc, extract_features(x, inc)) if a.inception else None
        rows.append((arm.name, count_params(arm.model) / 1e6, arm.steps, arm.seconds / arm.steps,
                     sum(arm.losses[-50:]) / len(arm.losses[-50:]), ts, fd, fid))
    print('| model | params M | steps in budget | s/step | train loss (last 50) | sampling s | FD-domain | FID |')
    print('|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f'| {r[0]} | {r[1]:.3f} | {r[2]} | {r[3]:.3f} | {r[4]:.4f} | {r[5]:.1f} | {r[6]:.3f} | '
              f'{"—" if r[7] is None else f"{r[7]:.2f}"} |')
    print(f'\nFD-domain: {a.n_samples} DDIM-{a.sample_steps} samples of each EMA model vs 2000 test images'
          + (f'; FID: vs {a.n_samples} test images (biased at this n: compare the two rows only)' if a.inception else ''))


if __name__ == '__main__':
    main()
