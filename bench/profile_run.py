"""Where the time goes: `torch.profiler` of one cpu-preset training step, of DDIM sampling (batch 256) and of the
scoring features (FID Inception and FD-domain), each split into conv / matmul / norm / elementwise / optimizer /
other ops and the time no op accounts for (Python and dispatch overhead).

    .venv/bin/python bench/profile_run.py [--threads 1] [--steps 5] [--top 12] [--sample-batch 256] [--inception-batch 64]
                                          [--precision fp32|bf16] [--only train sample inception fd_domain]

The fair-scale preset uses the cpu preset's U-Net and batch at 16x16, so the training-step profile covers both.
The profiled regions run several times first (warm-up) and the wall time is measured without the profiler.
Self CPU times are summed per op class; "unattributed" is wall time minus the summed self time of all ops.
"""
import argparse, os, platform, re, statistics, tempfile, time

from sdr.torchvision_shim import patch_torchvision
patch_torchvision()   # before torchvision is imported (by torch-fidelity, diffusers, grad-cam) beside the CPU torch
import torch
from torch.profiler import profile, ProfilerActivity

from sdr.core import precision_context
from sdr.config import preset, DataConfig
from sdr.train import Trainer
from sdr.data import load_dataset


def cpu_info() -> str:
    flags = set()
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('flags'): flags = set(line.split(':', 1)[1].split()); break
    except OSError: pass
    model = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor())
    isa = ', '.join(f'{f}={"yes" if f in flags else "no"}' for f in ('amx_bf16', 'avx512_bf16', 'avx512f'))
    return f'{model}; {isa}; torch {torch.__version__}; {torch.get_num_threads()} threads; load {os.getloadavg()[0]:.2f}'


CLASSES = [  # first match wins; matched against the aten op name
    ('conv', r'conv|mkldnn_convolution|slow_conv'),
    ('matmul', r'addmm|^aten::mm$|bmm|matmul|linear|scaled_dot_product|_flash_attention|baddbmm'),
    ('norm', r'group_norm|batch_norm|layer_norm|native_group_norm'),
    ('optimizer', r'_foreach|lerp|addcdiv|addcmul|clip_grad|norm$'),
    ('resize/pad', r'upsample|interpolate|grid_sampler|pad'),
    ('elementwise', r'add|mul|sub|div|silu|relu|sigmoid|exp|sqrt|tanh|clamp|where|pow|neg|fill|zero|copy|cat|randn|'
                    r'normal|mean|sum|mse|threshold|gelu|cos|sin|rsqrt|reciprocal|maximum|minimum'),
]


def op_class(name: str) -> str:
    for c, pat in CLASSES:
        if re.search(pat, name): return c
    return 'other'


def profile_region(name, fn, *, reps: int, top: int):
    for _ in range(2): fn()                      # warm-up
    walls = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); walls.append(time.perf_counter() - t0)
    wall = statistics.median(walls)
    with profile(activities=[ProfilerActivity.CPU]) as prof: fn()
    ka = [e for e in prof.key_averages() if e.key.startswith('aten::')]
    prof_wall = None
    total_self = sum(e.self_cpu_time_total for e in ka) / 1e6
    split = {}
    for e in ka: split[op_class(e.key)] = split.get(op_class(e.key), 0.0) + e.self_cpu_time_total / 1e6
    print(f'\n## {name}\nwall (median of {reps}, no profiler): {wall * 1e3:.1f} ms; aten self time under the profiler: '
          f'{total_self * 1e3:.1f} ms')
    # shares of the profiled aten self time; the rest of the wall time (profiler-free) is overhead no op accounts for
    print('\n| class | self ms | share of aten time |\n|---|---|---|')
    for c, v in sorted(split.items(), key=lambda kv: -kv[1]): print(f'| {c} | {v * 1e3:.1f} | {100 * v / total_self:.1f} % |')
    print(f'| unattributed (wall - aten self) | {max(wall - total_self, 0) * 1e3:.1f} | '
          f'{100 * max(wall - total_self, 0) / wall:.1f} % of wall |')
    n_ops = sum(e.count for e in ka)
    print(f'\naten op calls: {n_ops} ({n_ops / wall / 1e3:.1f} k/s of wall)\n')
    print(f'top {top} ops by self CPU time:\n\n| op | calls | self ms | share |\n|---|---|---|---|')
    for e in sorted(ka, key=lambda e: -e.self_cpu_time_total)[:top]:
        print(f'| {e.key} | {e.count} | {e.self_cpu_time_total / 1e3:.1f} | {100 * e.self_cpu_time_total / 1e6 / total_self:.1f} % |')
    return wall, split, total_self


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--steps', type=int, default=5, help='timed repetitions per region')
    ap.add_argument('--top', type=int, default=12)
    ap.add_argument('--sample-batch', type=int, default=256)
    ap.add_argument('--sample-steps', type=int, default=5, help='DDIM steps profiled (per-step cost; x25 for the fair preset)')
    ap.add_argument('--inception-batch', type=int, default=64)
    ap.add_argument('--precision', default='fp32', choices=['fp32', 'bf16'], help='U-Net training and sampling')
    ap.add_argument('--only', nargs='*', default=['train', 'sample', 'inception', 'fd_domain'])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print('#', cpu_info())
    cfg = preset('cpu', precision=a.precision)
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(cfg, d, device='cpu', progress=False)
        if 'train' in a.only:
            profile_region(f'cpu-preset training step (batch {cfg.train.batch_size}, 16x16, {a.precision} eager)', tr.train_step,
                           reps=a.steps, top=a.top)
        if 'sample' in a.only:
            g = torch.Generator().manual_seed(0)
            def fn():
                with precision_context(a.precision):
                    tr.diffusion.sample(tr.ema.model, (a.sample_batch, 1, 16, 16), steps=a.sample_steps, generator=g)
            w, _, _ = profile_region(f'DDIM sampling, batch {a.sample_batch}, {a.sample_steps} steps (EMA model, {a.precision})', fn,
                                     reps=max(2, a.steps // 2), top=a.top)
            print(f'per DDIM step: {w / a.sample_steps * 1e3:.0f} ms = {w / a.sample_steps / a.sample_batch * 1e3:.2f} ms/image/step')
    x = load_dataset(DataConfig(image_size=16), 'test')[0]
    if 'inception' in a.only:
        from sdr.inception import load_fid_inception
        xb = x[:a.inception_batch]
        for fast in (False, True):
            ex = load_fid_inception('cpu', fast=fast)
            w, _, _ = profile_region(f'FID Inception features, batch {a.inception_batch} (16x16 grey -> 299x299 RGB), '
                                     f'{"BN folded + channels-last (fast=True)" if fast else "torch-fidelity module (fast=False)"}',
                                     lambda: ex(xb), reps=max(2, a.steps // 2), top=a.top)
            print(f'per image: {w / len(xb) * 1e3:.1f} ms')
    if 'fd_domain' in a.only:
        from sdr.fd_domain import load_domain_extractor
        ex = load_domain_extractor(DataConfig(image_size=16))
        xb = x[:1024]
        w, _, _ = profile_region('FD-domain features, batch 1024', lambda: ex(xb), reps=a.steps, top=a.top)
        print(f'per image: {w / len(xb) * 1e6:.0f} us')


if __name__ == '__main__':
    main()
