"""Fingerprints of seeded training, sampling and metrics, for the reader's redesign (issue 16).

The redesign moves code between modules and notebooks; it must not change what the code computes. This script trains,
samples and scores small seeded runs through every trainer and sampler the redesign touches, and prints one JSON
object: a SHA-256 (first 16 hex digits) of every tensor result, and the metric values themselves.

`tests/golden/redesign.json` holds its output at the commit before the redesign (written by
`python tests/redesign_fingerprints.py --write`); `tests/test_redesign_identity.py` recomputes it on the current code
and asks for equality, key by key. Only the import lines of this file may change with the redesign.
"""
import argparse, hashlib, json, subprocess, tempfile
from pathlib import Path

import torch

from sdr.config import ConditionalConfig, preset
from sdr.data import load_dataset, to_model_range
from sdr.train import SRDTrainer
from sdr.runs import EvalConfig, run_experiment
from sdr.conditional import ConditionalTrainer
from sdr.latent import LatentSRDTrainer, autoencoder_preset
from sdr.inpainting import InpaintConfig, inpaint_eval
from sdr.fam import flaw_activation_map, mean_fam

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / 'tests' / 'golden' / 'redesign.json'
METRIC_KEYS = ('heldout_loss', 'fd_domain', 'fd_domain_ci', 'kd_domain', 'kd_domain_std', 'fid', 'fid_ci', 'kid', 'kid_std',
               'highlighter_accuracy', 'mfam_stats', 'n_gen', 'n_real', 'fid_n_gen', 'fid_n_real', 'extractor', 'steps')


def tensor_hash(*tensors) -> str:
    "SHA-256 (16 hex digits) of the tensors' dtypes, shapes and bytes, in order."
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f'{t.dtype}{tuple(t.shape)}'.encode()); h.update(t.numpy().tobytes())   # fp32/int tensors only
    return h.hexdigest()[:16]


def state_hash(sd: dict) -> str:
    "The hash of a state dict's tensors, by sorted key."
    return tensor_hash(*(sd[k] for k in sorted(sd) if torch.is_tensor(sd[k])))


def small(mechanism='combined', **srd):
    "The smoke preset cut to a few steps: 6 base steps, 6 refinement steps, mFAM refreshed every 3."
    cfg = preset('smoke')
    return cfg.replace(data=cfg.data.replace(max_images=256),
                       train=cfg.train.replace(steps=12, checkpoint_every=6, log_every=1),
                       srd=cfg.srd.replace(mechanism=mechanism, base_steps=6, cycle=3, n_real=64, n_generated=64, **srd))


def trainer_prints(tr, prefix: str) -> dict:
    "Weights, EMA, losses and mFAM history of a fitted trainer; DDIM and DDPM samples of its EMA model."
    out = {f'{prefix}.weights': state_hash(tr.model.state_dict()), f'{prefix}.ema': state_hash(tr.ema.model.state_dict()),
           f'{prefix}.losses': [r['loss'] for r in tr.log]}
    if getattr(tr, 'mfam_history', None):
        out[f'{prefix}.mfam'] = tensor_hash(*(h['mfam'] for h in tr.mfam_history))
    out[f'{prefix}.ddim'] = tensor_hash(tr.sample(8, seed=0, steps=5))
    out[f'{prefix}.ddpm'] = tensor_hash(tr.sample(4, seed=1, sampler='ddpm'))
    return out


def fingerprints(work: Path) -> dict:
    torch.set_num_threads(1)
    out = {}
    # 1. One run end to end through the run record: base, highlighter, Grad-CAM, mFAM, refinement, samples, both metrics.
    ev = EvalConfig(n_samples=48, n_real=200, sample_steps=5, metric='fair', heldout=64, n_inception=16, n_real_inception=32)
    m = run_experiment(small(), work / 'run', ev=ev, device='cpu')
    out['run.metrics'] = {k: m[k] for k in METRIC_KEYS if k in m}
    ck = torch.load(work / 'run' / 'train' / 'checkpoints' / 'last.pt', map_location='cpu', weights_only=False)
    out['run.checkpoint.model'] = state_hash(ck['model']); out['run.checkpoint.ema'] = state_hash(ck['ema']['model'])
    out['run.mfam_history'] = tensor_hash(torch.load(work / 'run' / 'mfam_history.pt', map_location='cpu'))
    # 2. The SRD trainer directly (combined, the paper's forward variant) with the learned projection, killed and resumed.
    tr = SRDTrainer(small(proj='conv'), work / 'srd', device='cpu', progress=False).fit(until=9)
    tr = SRDTrainer(small(proj='conv'), work / 'srd', device='cpu', progress=False).fit()   # resumes from step 9
    out.update(trainer_prints(tr, 'srd_conv'))
    # 3. Grad-CAM and the mFAM of that run's highlighter on fixed images.
    x = load_dataset(small().data, 'test')[0][:8]   # uint8
    for read in ('conv', 'activation'):
        fams = flaw_activation_map(tr.highlighter, to_model_range(x), layer=tr.highlighter.cam_module(read))
        out[f'fam.{read}'] = tensor_hash(fams); out[f'mfam.{read}'] = tensor_hash(mean_fam(fams))
    # 4. The conditional trainer (label dropout, guidance, per-class maps) and its guided samples.
    ccfg = small(mfam_batch=10).replace(conditional=ConditionalConfig(mfam='per_class'))
    ct = ConditionalTrainer(ccfg, work / 'cond', device='cpu', progress=False).fit()
    out.update(trainer_prints(ct, 'conditional'))
    out['conditional.guided'] = tensor_hash(ct.sample(10, seed=2, steps=5, guidance_scale=2.0))
    # 5. The latent trainer (reverse mechanism on latents) with its own small autoencoder.
    lt = LatentSRDTrainer(small('reverse'), work / 'latent', ae_cfg=autoencoder_preset('smoke', steps=20), device='cpu',
                          progress=False).fit()
    out.update(trainer_prints(lt, 'latent'))
    # 6. RePaint inpainting with the SRD run's EMA model.
    res = inpaint_eval(tr.ema.model, tr.diffusion, x[:4], InpaintConfig(steps=5, jump_length=2, jump_n_sample=2))
    out['repaint'] = {kind: {k: (tensor_hash(v) if torch.is_tensor(v) else v) for k, v in sorted(r.items()) if k != 'seconds'}
                      for kind, r in sorted(res.items())}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--write', action='store_true', help=f'write the fingerprints to {GOLDEN}')
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        fp = fingerprints(Path(d))
    if a.write:
        GOLDEN.parent.mkdir(exist_ok=True)
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True, cwd=GOLDEN.parent).stdout.strip()
        dirty = bool(subprocess.run(['git', 'status', '--porcelain', '--', 'sdr', 'nbs'], capture_output=True, text=True,
                                    cwd=GOLDEN.parent).stdout.strip())
        from sdr.runs import cpu_facts   # bits are equal only on CPUs with the same vector units
        GOLDEN.write_text(json.dumps({'commit': commit, 'sdr_dirty': dirty, 'torch': torch.__version__,
                                      'cpu_flags': cpu_facts()['cpu_flags'], 'fingerprints': fp}, indent=1) + '\n')
    print(json.dumps(fp, indent=1))


if __name__ == '__main__':
    main()
