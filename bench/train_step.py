"""Training-step speed: ours vs diffusers `UNet2DModel` at equal parameter count, same batch and resolution,
side by side in one run, against this CPU's fp32 matmul roof; and our U-ViT (notebook 02b) against our U-Net at equal
parameters and against the same U-ViT assembled from timm's reference transformer `Block`.

    python bench/train_step.py [--batch 64] [--steps 12] [--threads 2] [--only uvit]

Prints one table. All models run in the same training step (ε-MSE on q_sample, AdamW, grad clip, EMA), so the
comparison is of the networks, not of the loops. diffusers and timm are bench-only dependencies (`make bench` installs
them); a reference that is not installed is left out of the table and said so.
"""
import argparse, statistics, time
from sdr.torchvision_shim import patch_torchvision
patch_torchvision()   # before torchvision is imported (by torch-fidelity, diffusers, grad-cam) beside the CPU torch
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from sdr.config import preset, UNetConfig, DataConfig
from sdr.unet import build_unet, count_params, timestep_embedding
from sdr.uvit import build_uvit, uvit_preset, unpatchify
from sdr.diffusion import GaussianDiffusion, EMA, linear_betas


def matmul_roof(n=2048, reps=20):
    "Best observed fp32 GFLOP/s of an n x n matmul."
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3): a @ b
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter(); a @ b; dt = time.perf_counter() - t0
        best = max(best, 2 * n ** 3 / dt / 1e9)
    return best


class DiffusersEps(nn.Module):
    "diffusers UNet2DModel with our (x, t) -> eps call signature."
    def __init__(self, size, channels, widths, attn_levels, layers=1, groups=8):
        super().__init__()
        from diffusers import UNet2DModel
        down = ['AttnDownBlock2D' if i in attn_levels else 'DownBlock2D' for i in range(len(widths))]
        up = ['AttnUpBlock2D' if i in attn_levels else 'UpBlock2D' for i in reversed(range(len(widths)))]
        self.net = UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels,
                               block_out_channels=tuple(widths), down_block_types=tuple(down), up_block_types=tuple(up),
                               layers_per_block=layers, norm_num_groups=groups, attention_head_dim=widths[-1] // 4)
    def forward(self, x, t): return self.net(x, t).sample


class TimmUViT(nn.Module):
    """U-ViT built from timm's `vision_transformer.Block` (the block the official U-ViT code takes from timm: pre-LN,
    attention without qkv bias, MLP ratio 4, GELU), with the same tokens, long skips and head as `sdr.uvit.UViT`."""
    def __init__(self, vit, size, channels=1):
        super().__init__()
        from timm.models.vision_transformer import Block
        D, p, self.p, self.c = vit.embed_dim, vit.patch_size, vit.patch_size, channels
        blk = lambda: Block(D, vit.num_heads, mlp_ratio=vit.mlp_ratio, qkv_bias=vit.qkv_bias)
        self.patch_embed = nn.Conv2d(channels, D, p, stride=p)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (size // p) ** 2, D))
        self.in_blocks = nn.ModuleList([blk() for _ in range(vit.depth // 2)])
        self.mid_block = blk()
        self.out_blocks = nn.ModuleList([blk() for _ in range(vit.depth // 2)])
        self.skips = nn.ModuleList([nn.Linear(2 * D, D) for _ in range(vit.depth // 2)])
        self.norm, self.decoder_pred = nn.LayerNorm(D), nn.Linear(D, p * p * channels)
        self.final_layer = nn.Conv2d(channels, channels, 3, padding=1)
    def forward(self, x, t):
        h = self.patch_embed(x).flatten(2).transpose(1, 2)
        h = torch.cat([timestep_embedding(t, h.shape[-1]).unsqueeze(1), h], 1) + self.pos_embed
        skips = []
        for b in self.in_blocks: h = b(h); skips.append(h)
        h = self.mid_block(h)
        for b, lin in zip(self.out_blocks, self.skips): h = b(lin(torch.cat([h, skips.pop()], -1)))
        h = self.decoder_pred(self.norm(h))[:, 1:]
        return self.final_layer(unpatchify(h, patch_size=self.p, channels=self.c))


def make_step(model, diffusion, batch, size, channels):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ema = EMA(model, 0.999)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(batch, channels, size, size, generator=g) * 2 - 1
    def step():
        t = diffusion.sample_timesteps(batch, generator=g)
        eps = torch.randn(x0.shape, generator=g)
        loss = diffusion.training_losses(model, x0, t, noise=eps)['loss'].mean()
        opt.zero_grad(set_to_none=True); loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); ema.update(model)
    return step


def step_flops(model, diffusion, batch, size, channels):
    x0 = torch.zeros(batch, channels, size, size)
    t = torch.zeros(batch, dtype=torch.long)
    with FlopCounterMode(display=False) as fc:
        diffusion.training_losses(model, x0, t, noise=torch.randn_like(x0))['loss'].mean().backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def time_models(models, diffusion, batch, size, steps):
    "Median seconds per training step of each model, interleaved so that load changes hit all alike."
    steps_fn = {k: make_step(m, diffusion, batch, size, 1) for k, m in models.items()}
    times = {k: [] for k in models}
    for k in models:  # warm-up
        for _ in range(2): steps_fn[k]()
    for _ in range(steps):
        for k in models:
            t0 = time.perf_counter(); steps_fn[k](); times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def uvit_case(batch, steps, roof):
    """The cpu U-ViT (D 128, depth 6, 4 heads, patch 2 at 16x16) vs our U-Net at equal parameters (36 channels), the
    cpu preset's U-Net, and the same U-ViT from timm blocks when timm is installed."""
    cpu = preset('cpu')
    size, diffusion = cpu.data.image_size, GaussianDiffusion(linear_betas(1000))
    models = {'sdr UViT': build_uvit(cpu.replace(uvit=uvit_preset('cpu'))),
              'sdr UNet (equal params)': build_unet(cpu.replace(unet=cpu.unet.replace(base_channels=36, groups=4))),
              'sdr UNet (cpu preset)': build_unet(cpu)}
    try: models['timm-block UViT'] = TimmUViT(uvit_preset('cpu'), size)
    except ImportError: print('timm is not installed: the timm-block U-ViT row is left out (pip install timm)\n')
    flops = {k: step_flops(m, diffusion, batch, size, 1) for k, m in models.items()}
    sec = time_models(models, diffusion, batch, size, steps)
    return [('U-ViT 16x16', k, count_params(m) / 1e6, sec[k], batch / sec[k], flops[k] / 1e9, flops[k] / 1e9 / sec[k],
             100 * flops[k] / 1e9 / sec[k] / roof) for k, m in models.items()]


def bench_case(name, size, ucfg, dwidths, batch, steps, roof):
    cfg = preset('cpu').replace(data=DataConfig(image_size=size), unet=ucfg)
    diffusion = GaussianDiffusion(linear_betas(1000))
    ours = build_unet(cfg)
    # same widths and attention placement as ours (diffusers' mid block always has attention)
    attn_levels = {i for i in range(len(ucfg.channel_mults)) if size // 2 ** i in ucfg.attention_resolutions}
    theirs = DiffusersEps(size, 1, dwidths, attn_levels, layers=ucfg.num_res_blocks, groups=ucfg.groups)
    models = {'sdr UNet': ours, 'diffusers UNet2DModel': theirs}
    flops = {k: step_flops(m, diffusion, batch, size, 1) for k, m in models.items()}
    steps_fn = {k: make_step(m, diffusion, batch, size, 1) for k, m in models.items()}
    times = {k: [] for k in models}
    for k in models:  # warm-up
        for _ in range(2): steps_fn[k]()
    for _ in range(steps):  # interleaved, so load changes hit both alike
        for k in models:
            t0 = time.perf_counter(); steps_fn[k](); times[k].append(time.perf_counter() - t0)
    rows = []
    for k, m in models.items():
        s = statistics.median(times[k])
        rows.append((name, k, count_params(m) / 1e6, s, batch / s, flops[k] / 1e9, flops[k] / 1e9 / s,
                     100 * flops[k] / 1e9 / s / roof))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--batch', type=int, default=64); ap.add_argument('--steps', type=int, default=12)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--only', choices=('unet', 'uvit'), help='run one part (default: both)')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    roof = matmul_roof()
    print(f'fp32 matmul roof: {roof:.0f} GFLOP/s ({a.threads} threads, torch {torch.__version__})\n')
    cpu = preset('cpu')
    cases = [
        # the cpu preset itself
        ('cpu preset', cpu.data.image_size, cpu.unet, (32, 64, 64)),
        # the reference point of the issue: ~1.1 M params at 28x28
        ('28x28', 28, UNetConfig(base_channels=32, channel_mults=(1, 2, 2), attention_resolutions=(7,)), (32, 64, 64)),
    ]
    rows = []
    if a.only != 'uvit':
        for name, size, ucfg, dw in cases:
            rows += bench_case(name, size, ucfg, dw, a.batch, a.steps, roof)
    vit_rows = uvit_case(a.batch, a.steps, roof) if a.only != 'unet' else []
    hdr = f"{'case':11s} {'model':24s} {'params M':>8s} {'s/step':>7s} {'img/s':>7s} {'GFLOP/step':>10s} {'GFLOP/s':>8s} {'% roof':>6s}"
    print(hdr); print('-' * len(hdr))
    for r in rows + vit_rows:
        print(f'{r[0]:11s} {r[1]:24s} {r[2]:8.3f} {r[3]:7.4f} {r[4]:7.0f} {r[5]:10.2f} {r[6]:8.1f} {r[7]:6.0f}')
    print()
    for i in range(0, len(rows), 2):
        print(f'{rows[i][0]}: ours/diffusers speed ratio = {rows[i + 1][3] / rows[i][3]:.2f}x (img/s), '
              f'ours at {rows[i][7]:.0f}% of roof')
    if vit_rows:
        sec = {r[1]: r[3] for r in vit_rows}
        print(f"U-ViT: step time {sec['sdr UViT'] / sec['sdr UNet (equal params)']:.2f}x our U-Net's at equal parameters "
              f"({sec['sdr UViT'] / sec['sdr UNet (cpu preset)']:.2f}x the cpu preset's U-Net)"
              + (f", {sec['sdr UViT'] / sec['timm-block UViT']:.2f}x the timm-block U-ViT's" if 'timm-block UViT' in sec else ''))


if __name__ == '__main__':
    main()
