"""FID speed and agreement: our `compute_fid` vs torch-fidelity's `calculate_metrics` on the same images.

    .venv/bin/python bench/fid.py [--n 500] [--image-size 16] [--threads 2] [--batch-size 32]

1. Inception feature throughput (images/s) of the offline FID Inception on the CPU (torch-fidelity's
   `FeatureExtractorInceptionV3`, which resizes every image to 299 x 299: the cost does not depend on the input size).
2. FID and KID end to end, `n` generated vs `n` real images, in one run: ours with a cold real-statistics cache;
   torch-fidelity's `calculate_metrics` called directly on the same uint8 images with the same (offline) weights;
   ours again, now with the real statistics cached (only the generated side is computed).
The "generated" images are stand-ins: Fashion-MNIST test images n..2n-1, Gaussian-blurred (sigma 0.8 px); the real
ones are test images 0..n-1. KID uses subsets of size n on both sides (exact, so both libraries must agree).
This machine is shared: the load average is printed; compare rows of the same run.
"""
import argparse, os, tempfile, time, warnings

from sdr.torchvision_shim import patch_torchvision
patch_torchvision()   # before torchvision is imported (by torch-fidelity, diffusers, grad-cam) beside the CPU torch
import torch

from sdr.fid import RankDeficientWarning
from sdr.inception import extract_features, fid_inception_weights, images_to_uint8, load_fid_inception
from sdr.metrics import blur_images, compute_fid
from sdr.config import DataConfig
from sdr.data import load_dataset, to_model_range


class Uint8RGB(torch.utils.data.Dataset):
    "What torch-fidelity takes: uint8 (3, H, W) tensors."
    def __init__(self, x): self.x = images_to_uint8(x).expand(-1, 3, -1, -1)
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return self.x[i]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=500)
    ap.add_argument('--image-size', type=int, default=16)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--batch-size', type=int, default=32)
    ap.add_argument('--throughput-n', type=int, default=96)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import torch_fidelity
    warnings.simplefilter('ignore', RankDeficientWarning)
    load0 = os.getloadavg()[0]

    x = to_model_range(load_dataset(DataConfig(image_size=a.image_size), 'test')[0][:2 * a.n])
    real, gen = x[:a.n], blur_images(x[a.n:], 0.8)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter(); ex = load_fid_inception('cpu', cache_dir=cache); t_load = time.perf_counter() - t
        extract_features(real[:8], ex, batch_size=8, device='cpu')                       # warm-up
        t = time.perf_counter()
        extract_features(real[:a.throughput_n], ex, batch_size=a.batch_size, device='cpu')
        thr = a.throughput_n / (time.perf_counter() - t)

        t = time.perf_counter()
        cold = compute_fid(gen, real=real, real_key='bench', extractor=ex, cache_dir=cache, batch_size=a.batch_size,
                             kid_subsets=10, device='cpu')
        rows.append(('ours, cold cache (real + generated)', time.perf_counter() - t, cold, cold['fid'], cold['kid'], 2 * a.n))

        t = time.perf_counter()
        tf = torch_fidelity.calculate_metrics(
            input1=Uint8RGB(gen), input2=Uint8RGB(real), fid=True, kid=True, kid_subsets=10, kid_subset_size=a.n,
            feature_extractor_weights_path=str(fid_inception_weights(cache_dir=cache)), cuda=False,
            save_cpu_ram=True, cache=False, verbose=False, batch_size=a.batch_size)
        rows.append(('torch-fidelity calculate_metrics', time.perf_counter() - t, None, tf['frechet_inception_distance'],
                     tf['kernel_inception_distance_mean'], 2 * a.n))

        t = time.perf_counter()
        warm = compute_fid(gen, real=real, real_key='bench', extractor=ex, cache_dir=cache, batch_size=a.batch_size,
                             kid_subsets=10, device='cpu')
        assert warm['real_from_cache']
        rows.append(('ours, real statistics cached', time.perf_counter() - t, warm, warm['fid'], warm['kid'], a.n))

    print(f'FID Inception ({ex.name}; {ex.source}), torch {torch.__version__}, torch-fidelity '
          f'{torch_fidelity.__version__}, {a.threads} threads, batch {a.batch_size}; {a.n} generated vs {a.n} real '
          f'Fashion-MNIST images at {a.image_size} px; load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end '
          f'({os.cpu_count()} CPUs)\n')
    print(f'Inception features: {thr:.2f} images/s ({1 / thr:.3f} s/image) over {a.throughput_n} images; '
          f'loading the network: {t_load:.1f} s\n')
    print('| run | seconds | of which real side | generated side | statistics + CI + KID | images through Inception | FID | KID |')
    print('|---|---|---|---|---|---|---|---|')
    for name, s, r, fid, kid, n in rows:
        split = ' | '.join(f"{r['metric_seconds'][k]:.1f}" for k in ('real', 'gen', 'stats')) if r else '- | - | -'
        print(f'| {name} | {s:.1f} | {split} | {n} | {fid:.4f} | {kid:.6f} |')
    fid_t, kid_t = rows[1][3], rows[1][4]
    print(f"\n|FID ours - torch-fidelity| = {abs(cold['fid'] - fid_t):.2e} ({abs(cold['fid'] - fid_t) / fid_t:.1e} relative); "
          f"|KID ours - torch-fidelity| = {abs(cold['kid'] - kid_t):.2e}")
    print(f"ours: FID {cold['fid']:.2f}, 95 % CI [{cold['fid_ci'][0]:.2f}, {cold['fid_ci'][1]:.2f}] ({cold['fid_ci_method']}); "
          f"KID {cold['kid']:.4f} ± {cold['kid_std']:.4f}")
    print(f"cached real statistics: the second call's real side took {warm['metric_seconds']['real']:.2f} s instead of "
          f"{cold['metric_seconds']['real']:.1f} s; wall time {rows[0][1]:.0f} s -> {rows[2][1]:.0f} s "
          f"({rows[0][1] / rows[2][1]:.2f}x; the machine's load decides how close this gets to 2x at equal N)")


if __name__ == '__main__':
    main()
