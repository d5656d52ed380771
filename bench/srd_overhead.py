"""SRD's cost: refinement (mFAM refresh every `cycle` steps) vs plain training for the same steps, per mechanism,
split into highlighter training, mFAM sampling, Grad-CAM and the training steps themselves. The paper does not
quantify this.

    python bench/srd_overhead.py [--preset cpu] [--steps 300] [--cycle 100] [--threads 2]
                                 [--mechanisms forward reverse combined] [--share 3]

All runs start from the same untrained model (base_steps=0: the cost of a refresh does not depend on how well
the model is trained) and run the same steps. Prints the per-mechanism wall time, the split, and the projection
to the preset's full refinement phase, with the highlighter fitted by the run itself and shared by `--share` SRD
variants of one base (the grid fits it once per base and seed: e01 has 3 SRD variants per base, e02-e04 5-6).
"""
import argparse, statistics, tempfile, time
import torch
from sdr.config import preset
from sdr.train import SRDTrainer, Trainer


def run(cfg, out):
    tr = SRDTrainer(cfg, out, device='cpu', progress=False)
    t0 = time.perf_counter(); tr.fit(); wall = time.perf_counter() - t0
    return tr, wall


def seconds_per_step(trainer, n: int) -> float:
    "Mean seconds of `n` training steps with the trainer's current mFAM (no refresh: the mechanism's per-step work only)."
    t0 = time.perf_counter()
    for _ in range(n): Trainer.train_step(trainer)
    return (time.perf_counter() - t0) / n


def interleaved_step_cost(plain, srd, *, blocks: int = 5, n: int = 10) -> tuple[float, float]:
    "Median seconds per step of plain vs SRD steps, timed in alternating blocks so that machine load hits both alike."
    p, q = [], []
    for _ in range(blocks): p.append(seconds_per_step(plain, n)); q.append(seconds_per_step(srd, n))
    return statistics.median(p), statistics.median(q)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--preset', default='cpu'); ap.add_argument('--steps', type=int, default=300)
    ap.add_argument('--cycle', type=int, default=100); ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--mechanisms', nargs='+', default=['forward', 'reverse', 'combined'],
                    choices=['forward', 'reverse', 'combined'])
    ap.add_argument('--share', type=int, default=3, help='SRD variants sharing one base (and so one highlighter)')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    base = preset(a.preset)
    cfg = base.replace(train=base.train.replace(steps=a.steps, checkpoint_every=10 ** 9),
                       srd=base.srd.replace(base_steps=0, cycle=a.cycle))
    d = tempfile.mkdtemp()
    plain, wall_plain = run(cfg, f'{d}/plain')
    print(f'preset={a.preset} steps={a.steps} cycle={a.cycle} threads={a.threads} torch={torch.__version__} '
          f'(mfam_batch={cfg.srd.mfam_batch}, DDIM {cfg.srd.mfam_sample_steps} steps; highlighter on '
          f'{cfg.srd.n_real}+{cfg.srd.n_generated} images, DDIM {cfg.srd.highlighter_sample_steps} steps)\n')
    print(f"{'mechanism':10s} {'wall s':>8s} {'vs plain':>9s} {'steps s':>8s} {'highl. s':>9s} {'mFAM smp s':>10s} "
          f"{'Grad-CAM s':>10s} {'refreshes':>9s} {'step ovh':>9s} {'refresh-only ovh':>16s} {'projected ovh':>13s} "
          f"{f'shared by {a.share}':>12s}")
    print(f"{'none':10s} {wall_plain:8.1f} {'':>9s} {wall_plain:8.1f}")
    refine = base.train.steps - base.srd.base_steps
    n_full = -(-refine // base.srd.cycle)
    per_step = wall_plain / a.steps
    for mech in a.mechanisms:
        srd, wall = run(cfg.replace(srd=cfg.srd.replace(mechanism=mech)), f'{d}/{mech}')
        s = srd.srd_seconds
        n_refresh = len(srd.mfam_history)
        steps_only = wall - sum(s.values())
        plain_step, srd_step = interleaved_step_cost(plain, srd)
        step_ovh = srd_step / plain_step - 1   # the mechanism's own per-step cost, robust to load drifting between runs
        per_refresh = (s['mfam_sampling'] + s['gradcam']) / max(n_refresh, 1)
        refresh_ovh = per_refresh / (a.cycle * per_step)
        # the preset's refinement phase: one highlighter, its refreshes, and the mechanism's per-step cost
        def projected(highlighter_s):
            return (highlighter_s + n_full * per_refresh) / (refine * per_step) + step_ovh
        proj, proj_shared = projected(s['highlighter']), projected(s['highlighter'] / a.share)
        print(f"{mech:10s} {wall:8.1f} {100 * (wall / wall_plain - 1):+8.1f}% {steps_only:8.1f} {s['highlighter']:9.1f} "
              f"{s['mfam_sampling']:10.2f} {s['gradcam']:10.3f} {n_refresh:9d} {100 * step_ovh:+8.1f}% {100 * refresh_ovh:15.1f}% {100 * proj:12.1f}% {100 * proj_shared:11.1f}%")
    print(f'\nper plain training step {per_step:.3f} s. "step ovh": SRD vs plain seconds per training step, timed in '
          f'alternating blocks (5 x 10 steps each, medians). "refresh-only ovh": mFAM sampling + Grad-CAM per refresh over '
          f'{a.cycle} plain steps. "projected ovh": the {a.preset} preset refinement phase ({refine} steps, {n_full} '
          f'refreshes at cycle {base.srd.cycle}, highlighter once) over its plain training time; "shared by {a.share}": '
          f'the same with the highlighter fitted once for {a.share} variants of a base, as the grid does.')


if __name__ == '__main__':
    main()
