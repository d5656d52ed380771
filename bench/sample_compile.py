"""`Trainer.sample(compile=True)` against the eager sampler, side by side in one run: DDIM sampling of a trained base
(e11's first fair-preset base, its EMA model), fp32 (what every preset pins) and bf16 autocast, eager vs compiled.

    .venv/bin/python bench/sample_compile.py [--base reports/runs/e11_controls/base-4f2057b6a0] [--n 64] [--steps 25]
                                             [--blocks 3] [--threads 1]

The first compiled call of each precision pays the compile (printed apart; once per process, model and precision);
then the variants alternate in `--blocks` blocks and the table gives each one's median, so that a shared machine's
load hits them alike. The samples of each compiled variant are compared with its eager twin (same seed and noise).
"""
import argparse, os, statistics, tempfile, time
from pathlib import Path
import torch
from sdr.core import cpu_flags, cpu_model, load_json, resolve_precision
from sdr.config import ExperimentConfig
from sdr.runs import make_trainer
from sdr.train import load_checkpoint


def load_base(base: Path, precision: str):
    "A trainer in `precision` holding the base's weights (its config.json and train/checkpoints/last.pt), in a scratch folder."
    cfg = ExperimentConfig.from_dict(load_json(base / 'config.json'))
    tr = make_trainer(cfg, Path(tempfile.mkdtemp()) / 'bench', device='cpu')
    tr.load_state_dict(load_checkpoint(base / 'train' / 'checkpoints' / 'last.pt'))   # (the checkpoint checks the config it was written by, so the precision is set after)
    tr.precision = resolve_precision(precision, 'cpu')
    return tr


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--base', default='reports/runs/e11_controls/base-4f2057b6a0')
    ap.add_argument('--n', type=int, default=64, help='samples per call (one batch of --n)')
    ap.add_argument('--steps', type=int, default=25, help='DDIM steps (the fair preset scores with 25)')
    ap.add_argument('--blocks', type=int, default=3)
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    for name in ('n', 'steps', 'blocks', 'threads'):
        if getattr(a, name) < 1: raise SystemExit(f'--{name}={getattr(a, name)}: must be >= 1')
    base = Path(a.base)
    if not (base / 'train' / 'checkpoints' / 'last.pt').exists():
        raise SystemExit(f'--base={a.base}: no train/checkpoints/last.pt there (a base run folder of e11 is expected)')
    torch.set_num_threads(a.threads)
    trainers = {p: load_base(base, p) for p in ('fp32', 'bf16')}
    def call(p, compile):
        tr = trainers[p]
        return lambda: tr.sample(a.n, seed=0, steps=a.steps, batch_size=a.n, compile=compile)
    variants = {(p, c): call(p, c) for p in ('fp32', 'bf16') for c in (False, True)}
    first, out = {}, {}
    for key, fn in variants.items():   # first calls: the compile is paid here
        t0 = time.perf_counter(); out[key] = fn(); first[key] = time.perf_counter() - t0
    times = {k: [] for k in variants}
    for _ in range(a.blocks):
        for key, fn in variants.items():
            t0 = time.perf_counter(); fn(); times[key].append(time.perf_counter() - t0)
    flags = cpu_flags()
    isa = ' '.join(f for f in ('amx_bf16', 'avx512_bf16', 'avx512f', 'avx2') if f in flags)
    print(f'CPU: {cpu_model()} ({isa}); torch {torch.__version__}, {a.threads} thread(s); load average '
          f'{os.getloadavg()[0]:.2f}; base {base.name} at step {trainers["fp32"].step}; {a.n} samples, DDIM-{a.steps}, batch {a.n}, {a.blocks} blocks\n')
    print('| precision | sampler | median s per call | s per image | vs fp32 eager | first call s | max abs diff vs eager |')
    print('|---|---|---|---|---|---|---|')
    ref = statistics.median(times[('fp32', False)])
    for (p, c), ts in times.items():
        med = statistics.median(ts)
        diff = (out[(p, c)] - out[(p, False)]).abs().max().item()
        print(f"| {p} | {'compiled' if c else 'eager'} | {med:.2f} | {med / a.n:.3f} | {ref / med:.2f}× | {first[(p, c)]:.0f} | {diff:.2e} |")


if __name__ == '__main__':
    main()
