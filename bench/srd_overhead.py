"""SRD's cost: refinement (mFAM refresh every `cycle` steps) vs plain training for the same steps, split into
highlighter training, mFAM sampling, Grad-CAM and the training steps themselves. The paper does not quantify this.

    python bench/srd_overhead.py [--preset cpu] [--steps 300] [--cycle 100] [--threads 2]

Both runs start from the same untrained model (base_steps=0: the cost of a refresh does not depend on how well
the model is trained). Prints the measured split and the projection to the preset's full refinement phase.
"""
import argparse, tempfile, time
import torch
from sdr.core import preset
from sdr.train import SRDTrainer


def run(cfg, out):
    tr = SRDTrainer(cfg, out, device='cpu', progress=False)
    t0 = time.perf_counter(); tr.fit(); wall = time.perf_counter() - t0
    return tr, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--preset', default='cpu'); ap.add_argument('--steps', type=int, default=300)
    ap.add_argument('--cycle', type=int, default=100); ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    base = preset(a.preset)
    cfg = base.replace(train=base.train.replace(steps=a.steps, checkpoint_every=10 ** 9),
                       srd=base.srd.replace(base_steps=0, cycle=a.cycle))
    d = tempfile.mkdtemp()
    plain, wall_plain = run(cfg, f'{d}/plain')
    srd, wall_srd = run(cfg.replace(srd=cfg.srd.replace(mechanism='combined')), f'{d}/srd')
    s = srd.srd_seconds
    n_refresh = len(srd.mfam_history)
    train_only = wall_srd - sum(s.values())
    print(f'preset={a.preset} steps={a.steps} cycle={a.cycle} threads={a.threads} refreshes={n_refresh} '
          f'(mfam_batch={cfg.srd.mfam_batch}, DDIM {cfg.srd.mfam_sample_steps} steps; highlighter on '
          f'{cfg.srd.n_real}+{cfg.srd.n_generated} images, DDIM {cfg.srd.highlighter_sample_steps} steps)\n')
    print(f"{'part':28s} {'seconds':>8s} {'% of plain':>10s}")
    rows = [('plain training (all steps)', wall_plain), ('SRD run, total', wall_srd),
            ('  training steps', train_only), ('  highlighter (once)', s['highlighter']),
            ('  mFAM sampling', s['mfam_sampling']), ('  Grad-CAM', s['gradcam'])]
    for name, v in rows: print(f'{name:28s} {v:8.1f} {100 * v / wall_plain:9.1f}%')
    per_step = wall_plain / a.steps
    per_refresh = (s['mfam_sampling'] + s['gradcam']) / max(n_refresh, 1)
    refine = base.train.steps - base.srd.base_steps
    n_full = -(-refine // base.srd.cycle)
    proj = (s['highlighter'] + n_full * per_refresh) / (refine * per_step)
    print(f'\nper refresh {per_refresh:.2f} s; per training step {per_step:.3f} s')
    print(f'refresh-only overhead at cycle={a.cycle}: {100 * per_refresh / (a.cycle * per_step):.1f} %')
    print(f'projected overhead of the {a.preset} preset refinement phase ({refine} steps, {n_full} refreshes, '
          f'highlighter once): {100 * proj:.1f} % of its plain training time')


if __name__ == '__main__':
    main()
