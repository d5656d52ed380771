"""How far can precision take the training step on this CPU? A roofline of the cpu-preset training step (batch 64,
16x16; the fair preset trains the same U-Net at the same batch), measured in one run:

1. the step's FLOPs (`torch.utils.flop_counter`: convolutions, matmuls and attention, forward + backward);
2. the step's wall time in fp32 and in the library's bf16 (`precision='bf16'`), alternated;
3. the roofs of this CPU in both precisions: a 2048^2 matmul (the issue's reference) and, more to the point, each of the
   step's own convolutions timed alone at its own shape (forward + backward), summed over the step.

Line 3 gives a bound that no kernel tuning, fusion, layout or Python trimming can beat while the step keeps its FLOPs:
even if every non-convolution op took no time, a bf16 step cannot run faster than the sum of its bf16 convolutions.
The table prints `step fp32 / sum of bf16 convolutions`, the largest speed-up precision can buy here.

    .venv/bin/python bench/roofline.py [--threads 1] [--blocks 4] [--uvit]

`--uvit` adds the same rows for e06's U-ViT (D 128, depth 6, patch 2), whose step is matmul- rather than conv-bound.
"""
import argparse, statistics, tempfile, time, warnings
from collections import Counter

from sdr.torchvision_shim import patch_torchvision
patch_torchvision()
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sdr.config import UViTConfig, preset
from sdr.train import Trainer

from speed import alternate, header


def step_flops(trainer: Trainer) -> int:
    "FLOPs of one training step (forward + backward), as torch's flop counter counts them."
    with FlopCounterMode(display=False) as counter: trainer.train_step()
    return counter.get_total_flops()


def layer_shapes(model: nn.Module, trainer: Trainer) -> Counter:
    "(layer, input shape) -> how many calls one forward pass of a training batch makes, for Conv2d and Linear layers."
    seen, hooks = Counter(), []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(lambda mod, inp, out: seen.update([(mod, tuple(inp[0].shape))])))
    try: trainer.train_step()
    finally:
        for h in hooks: h.remove()
    return seen


def isolated_layer_seconds(shapes: Counter, precision: str, reps: int) -> float:
    "Sum over the step's Conv2d/Linear calls of each call timed alone (forward + backward, median of `reps`)."
    total = 0.0
    ctx = (lambda: torch.autocast('cpu', dtype=torch.bfloat16)) if precision == 'bf16' else torch.enable_grad
    for (mod, shape), count in shapes.items():
        layer = type(mod)(**_layer_args(mod))
        x = torch.randn(shape, requires_grad=True)
        def once():
            with ctx(): y = layer(x)
            y.float().sum().backward()
        once()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter(); once(); times.append(time.perf_counter() - t0)
        total += count * statistics.median(times)
    return total


def _layer_args(mod: nn.Module) -> dict:
    if isinstance(mod, nn.Linear): return dict(in_features=mod.in_features, out_features=mod.out_features, bias=mod.bias is not None)
    return dict(in_channels=mod.in_channels, out_channels=mod.out_channels, kernel_size=mod.kernel_size, stride=mod.stride,
                padding=mod.padding, groups=mod.groups, bias=mod.bias is not None)


def matmul_roofs(n: int = 2048, blocks: int = 4, reps: int = 3) -> dict:
    """GFLOP/s of an n x n matmul in fp32 and in bf16 (plain bf16 tensors, as autocast hands them to the GEMM): the best
    of `blocks` alternating blocks, so that a shared machine's load does not pass for a slow roof."""
    mats = {p: [torch.randn(n, n, dtype=torch.bfloat16 if p == 'bf16' else torch.float32) for _ in range(2)] for p in ('fp32', 'bf16')}
    best = {p: 0.0 for p in mats}
    for _ in range(blocks):
        for p, (a, b) in mats.items():
            a @ b
            t0 = time.perf_counter()
            for _ in range(reps): a @ b
            best[p] = max(best[p], 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--blocks', type=int, default=4)
    ap.add_argument('--reps', type=int, default=5, help='timed calls per isolated layer')
    ap.add_argument('--uvit', action='store_true', help="add e06's U-ViT (D 128, depth 6, patch 2)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter('ignore')
    print(header(), '\n')
    roof = matmul_roofs(blocks=a.blocks)
    print(f'matmul 2048^2: fp32 {roof["fp32"]:.0f} GFLOP/s, bf16 {roof["bf16"]:.0f} GFLOP/s ({roof["bf16"] / roof["fp32"]:.2f}x)\n')
    models = {'U-Net (cpu preset, 1.16 M)': preset('cpu')}
    if a.uvit: models['U-ViT (D 128, depth 6, patch 2)'] = preset('cpu').replace(uvit=UViTConfig())
    print('| model | FLOPs / step | fp32 step | bf16 step | bf16 vs fp32 | fp32 GFLOP/s (% of fp32 matmul roof) | '
          'sum of its convs+linears alone, fp32 / bf16 | share of the fp32 step | largest speed-up from bf16 |')
    print('|---|---|---|---|---|---|---|---|---|')
    with tempfile.TemporaryDirectory() as d:
        for name, cfg in models.items():
            tr = {p: Trainer(cfg.replace(precision=p), f'{d}/{name[:5]}{p}', device='cpu', progress=False) for p in ('fp32', 'bf16')}
            flops = step_flops(tr['fp32'])
            t = alternate({p: tr[p].train_step for p in tr}, blocks=a.blocks, reps=3)
            shapes = layer_shapes(tr['fp32'].model, tr['fp32'])
            iso = {p: isolated_layer_seconds(shapes, p, a.reps) for p in ('fp32', 'bf16')}
            rate = flops / t['fp32'] / 1e9
            print(f'| {name} | {flops / 1e9:.1f} G | {t["fp32"] * 1e3:.0f} ms | {t["bf16"] * 1e3:.0f} ms | '
                  f'{t["fp32"] / t["bf16"]:.2f}x | {rate:.0f} ({100 * rate / roof["fp32"]:.0f} %) | '
                  f'{iso["fp32"] * 1e3:.0f} / {iso["bf16"] * 1e3:.0f} ms | {100 * iso["fp32"] / t["fp32"]:.0f} % | '
                  f'{t["fp32"] / iso["bf16"]:.2f}x |')


if __name__ == '__main__':
    main()
