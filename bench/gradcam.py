"""Grad-CAM speed: our batched `flaw_activation_map` vs the `grad-cam` package on the same model and images.

    .venv/bin/python bench/gradcam.py [--n 256] [--repeats 5] [--preset cpu] [--threads 2]

Three ways to get 256 FAMs from one highlighter: ours (one batched forward + one autograd.grad to the CAM layer),
the package given the whole batch, and the package one image at a time with a fresh `GradCAM` object per image
(what the official Guided-Diffusion `generate_fam` does). The three are timed in interleaved rounds within one run
(this machine is shared, so compare columns of the same run); the table shows the median of the rounds. The maps
are checked to agree before timing. The weights are random: the cost does not depend on them.
"""
import argparse, statistics, time

from sdr.torchvision_shim import patch_torchvision
patch_torchvision()   # before torchvision is imported (by torch-fidelity, diffusers, grad-cam) beside the CPU torch
import torch
import torch.nn as nn

from sdr.core import make_generator
from sdr.highlighter import build_flaw_highlighter, highlighter_preset
from sdr.fam import flaw_activation_map


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=256)
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--preset', default='cpu', choices=('smoke', 'cpu', 'paper'))
    ap.add_argument('--image-size', type=int, default=None, help='override the preset image size (paper: 128)')
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    torch.set_num_threads(a.threads)

    cfg = highlighter_preset(a.preset, **({'image_size': a.image_size} if a.image_size else {}))
    model = build_flaw_highlighter(cfg, generator=make_generator(0)).eval()
    x = torch.rand(a.n, cfg.channels, cfg.image_size, cfg.image_size, generator=make_generator(1)) * 2 - 1
    with_softmax = nn.Sequential(model, nn.Softmax(dim=1))   # the package scores the class-0 probability, as the official code
    layer = model.cam_layer

    def ours():
        return flaw_activation_map(model, x, layer=layer, target=0, score='prob')

    def package_batched():
        with GradCAM(model=with_softmax, target_layers=[layer]) as cam:
            return torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(0)] * len(x)))[:, None]

    def package_per_image():
        out = []
        for img in x:
            with GradCAM(model=with_softmax, target_layers=[layer]) as cam:
                out.append(torch.from_numpy(cam(input_tensor=img[None], targets=[ClassifierOutputTarget(0)])))
        return torch.cat(out)[:, None]

    fns = dict(ours=ours, package_batched=package_batched, package_per_image=package_per_image)
    # agreement first (after the same min-max; the package's own has a 1e-7 epsilon)
    def mm(m):
        f = m.flatten(1); lo, hi = f.min(1, keepdim=True).values, f.max(1, keepdim=True).values
        return torch.where(hi > lo, (f - lo) / (hi - lo).clamp_min(1e-30), torch.zeros_like(f))
    maps = {k: f() for k, f in fns.items()}   # also the warm-up
    diff = max((mm(maps['ours']) - mm(m)).abs().max().item() for m in maps.values())
    times = {k: [] for k in fns}
    for _ in range(a.repeats):
        for k, f in fns.items():
            t = time.perf_counter(); f(); times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f'Grad-CAM of {a.n} images, {a.preset} highlighter ({cfg.image_size} px, {sum(p.numel() for p in model.parameters()):,} '
          f'parameters), torch {torch.__version__}, {a.threads} threads, median of {a.repeats} interleaved rounds; '
          f'max |ours - package| = {diff:.1e}\n')
    print('| implementation | seconds | images/s | ours is faster by |')
    print('|---|---|---|---|')
    for k, v in med.items():
        print(f'| {k} | {v:.3f} | {a.n / v:,.0f} | {v / med["ours"]:.1f}x |')
    print(f'\nratio vs package (batched): {med["package_batched"] / med["ours"]:.1f}x (goal >= 3x); '
          f'vs package per image (official usage): {med["package_per_image"] / med["ours"]:.1f}x')


if __name__ == '__main__':
    main()
