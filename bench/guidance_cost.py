"""The sampling-time and training-time cost of SRD's peers (nbs/10_guidance.ipynb), and proof that the sampler hook
costs nothing when unused.

    python bench/guidance_cost.py [--preset fair] [--batch 256] [--steps 10] [--repeats 5] [--threads 1]

Sampling: seconds per DDIM step on one batch with the preset's U-Net (random weights: the cost does not depend on
them), side by side in interleaved repeats (median), for
  - the sampler as it was before the hook (main at 4435546, read from git; skipped outside a checkout),
  - the sampler with `guidance=None` (the default) and with a do-nothing guidance,
  - Discriminator Guidance (the head on the U-Net's frozen encoder; and on pixels), weight 1,
  - Autoguidance (a second U-Net of the same size as the guide), weight 2.
Training: seconds to fit DG's discriminator per epoch of 1024 + 1024 images (the samples it is fitted on cost
`n_generated` images of plain sampling on top; AG's guide costs `guide_step` base steps unless a base kept its
checkpoint). Prints tables, asserts nothing.
"""
import argparse, re, statistics, subprocess, time, types
from pathlib import Path
import torch
import sdr.core
from sdr.core import make_generator
from sdr.config import preset
from sdr.diffusion import GaussianDiffusion
from sdr.guidance import Autoguidance, DiscriminatorConfig, DiscriminatorGuidance, train_discriminator
from sdr.unet import build_unet

OLD = '4435546'   # the last commit before the hook


def old_diffusion_module():
    "sdr/diffusion.py as it was at OLD (None outside a git checkout that has it)."
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run(['git', '-C', str(root), 'show', f'{OLD}:sdr/diffusion.py'], capture_output=True, text=True)
    if r.returncode != 0: return None
    # the package-relative import, made absolute; its names have since moved between sdr.core and sdr.config
    src = re.sub(r'^from \.core import (.+)$', lambda m: '\n'.join(
        f"from sdr.{'core' if hasattr(sdr.core, n.strip()) else 'config'} import {n.strip()}" for n in m.group(1).split(',')),
        r.stdout, flags=re.M)
    mod = types.ModuleType('old_diffusion'); exec(compile(src, 'old_diffusion.py', 'exec'), mod.__dict__)
    return mod


def timed(fn) -> float:
    t0 = time.perf_counter(); fn(); return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--preset', default='fair'); ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--steps', type=int, default=10); ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = preset(a.preset)
    torch.manual_seed(0)
    model, guide = build_unet(cfg).eval(), build_unet(cfg).eval()
    for m in (model, guide): m.requires_grad_(False)
    diff = GaussianDiffusion.from_config(cfg.diffusion)
    c, s = cfg.data.channels, cfg.data.image_size
    real, fake = torch.rand(2048, c, s, s) * 2 - 1, torch.rand(2048, c, s, s) * 2 - 1
    fits = {}
    discs = {}
    for feat in ('unet', 'pixels'):
        dcfg = DiscriminatorConfig(features=feat, epochs=1)
        discs[feat], rep = train_discriminator(real[:1138], fake[:1138], diffusion=diff, extractor=model, cfg=dcfg,
                                               generator=make_generator(0))
        fits[feat] = rep['seconds']   # 1024 + 1024 training images after the 10 % held out, one epoch
    shape = (a.batch, c, s, s)
    run = lambda sample, **kw: (lambda: sample(model, shape, steps=a.steps, generator=make_generator(1), **kw))
    arms = {}
    old = old_diffusion_module()
    if old is not None:
        od = old.GaussianDiffusion.from_config(cfg.diffusion)
        arms['before the hook (main 4435546)'] = run(od.sample)
    arms['guidance=None (default)'] = run(diff.sample)
    arms['do-nothing guidance'] = run(diff.sample, guidance=lambda x, t, out: out)
    arms['DG, U-Net encoder features'] = run(diff.sample, guidance=DiscriminatorGuidance(discs['unet'], diff, 1.0))
    arms['DG, pixel features'] = run(diff.sample, guidance=DiscriminatorGuidance(discs['pixels'], diff, 1.0))
    arms['autoguidance'] = run(diff.sample, guidance=Autoguidance(guide, 2.0))
    for f in arms.values(): f()   # warm-up
    times = {k: [] for k in arms}
    for _ in range(a.repeats):
        for k, f in arms.items(): times[k].append(timed(f) / a.steps)
    ref = statistics.median(times['guidance=None (default)'])
    print(f'preset={a.preset} batch={a.batch} DDIM steps={a.steps} repeats={a.repeats} threads={a.threads} '
          f'torch={torch.__version__}; U-Net {sum(p.numel() for p in model.parameters()):,} parameters, '
          f'DG head {sum(p.numel() for p in discs["unet"].parameters()):,} (U-Net features) / '
          f'{sum(p.numel() for p in discs["pixels"].parameters()):,} (pixels)\n')
    print('| sampler | s per step (median) | min | max | × guidance=None | s per 1000 images at 25 steps |')
    print('|---|---|---|---|---|---|')
    for k, v in times.items():
        med = statistics.median(v)
        print(f'| {k} | {med:.4f} | {min(v):.4f} | {max(v):.4f} | {med / ref:.2f} | {med * 25 * 1000 / a.batch:.1f} |')
    print('\n| DG discriminator fit | s per epoch of 1024 real + 1024 generated |')
    print('|---|---|')
    for k, v in fits.items(): print(f'| features={k} | {v:.1f} |')


if __name__ == '__main__':
    main()
