"""Grad-CAM against the `grad-cam` package (the official code's implementation), state restoration, batch
independence, validation, the highlighter's training, and the FAM localization benchmark end to end."""
import json, warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from sdr.core import make_generator
from sdr.data import load_fashion_mnist, to_model_range, resize_images
from sdr.highlighter import FlawHighlighter, build_flaw_highlighter, highlighter_preset, train_flaw_highlighter
from sdr.fam import flaw_activation_map, mean_fam
from sdr.fam_benchmark import (ARTIFACT_KINDS, OBJECT_LEVEL, LocalizationConfig, fam_localization_benchmark,
                               inject_artifacts, localization_preset, localization_scores,
                               write_fam_localization_report)
from sdr.config import HighlighterConfig

from pytorch_grad_cam import GradCAM  # the test-only dependency `grad-cam` (dev_requirements); no skip: the oracle must run
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

torch.set_num_threads(1)


def _fashion(size, n, split='train', offset=0):
    x = load_fashion_mnist(split)[0][offset:offset + n]
    return to_model_range(x if size == 28 else resize_images(x, size))

def _minmax(m):
    "The same per-image min-max for both implementations (the package's own has a 1e-7 epsilon)."
    f = m.flatten(1); lo, hi = f.min(1, keepdim=True).values, f.max(1, keepdim=True).values
    return torch.where(hi > lo, (f - lo) / (hi - lo).clamp_min(1e-30), torch.zeros_like(f)).view_as(m)

def _package_cam(model, images, layer, target, score):
    net = nn.Sequential(model, nn.Softmax(dim=1)) if score == 'prob' else model
    with GradCAM(model=net, target_layers=[layer]) as cam:
        out = cam(input_tensor=images, targets=[ClassifierOutputTarget(target)] * len(images))
    return torch.from_numpy(out)[:, None]

@pytest.fixture(scope='module')
def data28():
    clean = _fashion(28, 1600)
    corrupted = torch.cat([inject_artifacts(c, k, patch=8, generator=make_generator(i))[0]
                           for i, (k, c) in enumerate(zip(ARTIFACT_KINDS, _fashion(28, 1600, offset=1600).chunk(5)))])
    return clean, corrupted

@pytest.fixture(scope='module')
def trained28(data28):
    "A cpu-size highlighter trained briefly on clean vs corrupted Fashion-MNIST (BatchNorm, 7x7 CAM grid)."
    clean, corrupted = data28
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model, report = train_flaw_highlighter(clean, corrupted, cfg=highlighter_preset('cpu', epochs=2),
                                               generator=make_generator(0), progress=False)
    return model, report

@pytest.fixture(scope='module')
def probe28(data28):
    clean, corrupted = data28
    return torch.cat([clean[-12:], corrupted[-12:]])


# --- the oracle ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('score', ['prob', 'logit'])
@pytest.mark.parametrize('target', [0, 1])
def test_oracle_trained_highlighter(trained28, probe28, score, target):
    model, _ = trained28
    ours = flaw_activation_map(model, probe28, layer=model.cam_layer, target=target, score=score)
    ref = _package_cam(model, probe28, model.cam_layer, target, score)
    assert (ours.flatten(1).amax(1) > 0).sum() >= len(ours) // 2, 'too few non-constant maps for a meaningful comparison'
    torch.testing.assert_close(ours, _minmax(ref), atol=1e-5, rtol=0)

@pytest.mark.parametrize('score', ['prob', 'logit'])
def test_oracle_vgg16_layout(score):
    "The paper preset (VGG16 convs, no BatchNorm) at 64 px, RGB, random weights."
    cfg = highlighter_preset('paper', image_size=64)
    model = build_flaw_highlighter(cfg, generator=make_generator(3))
    x = torch.rand(4, 3, 64, 64, generator=make_generator(4)) * 2 - 1
    ours = flaw_activation_map(model, x, layer=model.cam_layer, score=score)
    ref = _package_cam(model, x, model.cam_layer, 0, score)
    assert (ours.flatten(1).amax(1) > 0).any()
    torch.testing.assert_close(ours, _minmax(ref), atol=1e-5, rtol=0)

def test_oracle_other_layer(trained28, probe28):
    "Any conv layer works, e.g. the first one (28x28 grid: no resize)."
    model, _ = trained28
    first = model.features[0]
    torch.testing.assert_close(flaw_activation_map(model, probe28, layer=first),
                               _minmax(_package_cam(model, probe28, first, 0, 'prob')), atol=1e-5, rtol=0)


# --- properties ---------------------------------------------------------------------------------------------

def test_shapes_ranges_dtype(trained28, probe28):
    model, _ = trained28
    maps = flaw_activation_map(model, probe28, layer=model.cam_layer)
    assert maps.shape == (len(probe28), 1, 28, 28) and maps.dtype == torch.float32 and not maps.requires_grad
    assert maps.min() >= 0 and maps.max() <= 1
    for m in maps: assert float(m.max()) in (0.0, 1.0) and float(m.min()) == 0.0

def test_non_square_input_fully_convolutional():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2))
    torch.manual_seed(0)
    x = torch.randn(3, 1, 20, 28)
    ours = flaw_activation_map(net, x, layer=net[2])
    assert ours.shape == (3, 1, 20, 28)
    torch.testing.assert_close(ours, _minmax(_package_cam(net, x, net[2], 0, 'prob')), atol=1e-5, rtol=0)

def test_batch_independence_in_train_mode(trained28, probe28):
    model, _ = trained28
    model.train()
    try:
        full = flaw_activation_map(model, probe28, layer=model.cam_layer)
        for i in (0, 5, 13, len(probe28) - 1):
            torch.testing.assert_close(flaw_activation_map(model, probe28[i:i + 1], layer=model.cam_layer), full[i:i + 1], atol=1e-5, rtol=0)
        perm = torch.randperm(len(probe28), generator=make_generator(1))
        torch.testing.assert_close(flaw_activation_map(model, probe28[perm], layer=model.cam_layer), full[perm], atol=1e-5, rtol=0)
        torch.testing.assert_close(flaw_activation_map(model, probe28, layer=model.cam_layer, batch_size=5), full, atol=1e-5, rtol=0)
    finally:
        model.eval()

def _snapshot(model):
    return dict(modes={n: m.training for n, m in model.named_modules()},
                req={n: p.requires_grad for n, p in model.named_parameters()},
                grads={n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()},
                grad_ids={n: id(p.grad) for n, p in model.named_parameters()},
                buffers={n: b.clone() for n, b in model.named_buffers()},
                params={n: p.detach().clone() for n, p in model.named_parameters()},
                hooks=sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules()))

def _assert_same(a, b):
    assert a['modes'] == b['modes'] and a['req'] == b['req'] and a['hooks'] == b['hooks'] and a['grad_ids'] == b['grad_ids']
    for n in a['grads']:
        assert (a['grads'][n] is None) == (b['grads'][n] is None), n
        if a['grads'][n] is not None: assert torch.equal(a['grads'][n], b['grads'][n]), n
    for key in ('buffers', 'params'):
        for n in a[key]: assert torch.equal(a[key][n], b[key][n]), n

def _odd_state_model():
    "Train mode overall, one BatchNorm in eval mode, frozen first conv, some .grad set, one None."
    model = build_flaw_highlighter(highlighter_preset('smoke'), generator=make_generator(5))
    model.train(); model.features[1].eval()
    model.features[0].weight.requires_grad_(False)
    for i, p in enumerate(model.parameters()):
        if i % 2 and p.requires_grad: p.grad = torch.full_like(p, 0.5)
    return model

def test_state_restored():
    model = _odd_state_model()
    x = torch.rand(6, 1, 16, 16, generator=make_generator(2)) * 2 - 1
    before = _snapshot(model)
    with torch.no_grad():                                      # works inside no_grad, and leaves it on
        maps = flaw_activation_map(model, x, layer=model.cam_layer)
        assert not torch.is_grad_enabled()
    assert maps.shape == (6, 1, 16, 16)
    _assert_same(before, _snapshot(model))

def test_state_restored_on_error():
    model = _odd_state_model()
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    before = _snapshot(model)
    def boom(module, inputs, output): raise RuntimeError('boom')
    h = model.head[3].register_forward_hook(boom)               # fails after the CAM hook was placed
    before_with_hook = _snapshot(model)
    with pytest.raises(RuntimeError, match='boom'):
        flaw_activation_map(model, x, layer=model.cam_layer)
    _assert_same(before_with_hook, _snapshot(model))
    h.remove(); _assert_same(before, _snapshot(model))
    with pytest.raises(ValueError, match='target=5'):           # validation errors restore it too
        flaw_activation_map(nn.Sequential(model), x, layer=model.cam_layer, target=5)
    _assert_same(before, _snapshot(model))

def test_frozen_model_and_inference_tensors(trained28, probe28):
    model, _ = trained28
    ref = flaw_activation_map(model, probe28, layer=model.cam_layer)
    for p in model.parameters(): p.requires_grad_(False)
    try:
        with torch.inference_mode(): x = probe28.clone()
        torch.testing.assert_close(flaw_activation_map(model, x, layer=model.cam_layer), ref, atol=1e-6, rtol=0)
    finally:
        for p in model.parameters(): p.requires_grad_(True)

def test_inplace_relu_after_layer_uses_pre_relu_activations(trained28, probe28):
    "A model whose ReLU after the CAM layer is in-place gives the same map (the hook keeps the pre-ReLU A)."
    model, _ = trained28
    ref = flaw_activation_map(model, probe28, layer=model.cam_layer)
    relus = [m for m in model.features if isinstance(m, nn.ReLU)]
    for r in relus: r.inplace = True
    try: torch.testing.assert_close(flaw_activation_map(model, probe28, layer=model.cam_layer), ref, atol=1e-6, rtol=0)
    finally:
        for r in relus: r.inplace = False

def test_constant_map_is_zeros(trained28, probe28):
    model, _ = trained28
    layer = model.cam_layer
    w, b = layer.weight.detach().clone(), layer.bias.detach().clone()
    with torch.no_grad(): layer.weight.zero_(); layer.bias.fill_(0.3)   # A constant in space: no structure to show
    try: maps = flaw_activation_map(model, probe28, layer=layer)
    finally:
        with torch.no_grad(): layer.weight.copy_(w); layer.bias.copy_(b)
    assert torch.equal(maps, torch.zeros_like(maps))

def test_prob_is_margin_for_two_classes(trained28, probe28):
    model, _ = trained28
    class Margin(nn.Module):
        def __init__(self, m): super().__init__(); self.m = m
        def forward(self, x): z = self.m(x); return z[:, :1] - z[:, 1:]
    prob = flaw_activation_map(model, probe28, layer=model.cam_layer, score='prob')
    margin = flaw_activation_map(Margin(model), probe28, layer=model.cam_layer, score='logit')
    logit = flaw_activation_map(model, probe28, layer=model.cam_layer, score='logit')
    torch.testing.assert_close(prob, margin, atol=1e-5, rtol=0)
    assert (prob - logit).abs().max() > 0.05                       # `logit` (z0 alone) is a different map

@pytest.mark.parametrize('kwargs, match', [
    (dict(layer=nn.Conv2d(1, 1, 3)), 'not a submodule'),
    (dict(layer='features.0'), 'not a submodule'),
    (dict(target=-1), 'target=-1'), (dict(target=2), 'target=2'), (dict(target=0.0), 'target=0.0'),
    (dict(score='softmax'), "score='softmax'"), (dict(batch_size=0), 'batch_size=0'),
    (dict(images=torch.zeros(0, 1, 28, 28)), 'empty batch'), (dict(images=torch.zeros(1, 28, 28)), r'expected \(N, C, H, W\)'),
    (dict(images=torch.zeros(2, 1, 28, 28, dtype=torch.uint8)), 'floating dtype'), (dict(images=np.zeros((2, 1, 28, 28))), 'torch.Tensor'),
])
def test_validation(trained28, probe28, kwargs, match):
    model, _ = trained28
    kw = dict(images=probe28[:2], layer=model.cam_layer) | kwargs
    with pytest.raises(ValueError, match=match):
        flaw_activation_map(model, kw.pop('images'), **kw)

def test_layer_must_give_a_feature_map(trained28, probe28):
    model, _ = trained28
    with pytest.raises(ValueError, match=r'\(B, K, h, w\)'):
        flaw_activation_map(model, probe28[:2], layer=model.head[1])
    assert all(len(m._forward_hooks) == 0 for m in model.modules())

def test_mean_fam(trained28, probe28):
    model, _ = trained28
    maps = flaw_activation_map(model, probe28, layer=model.cam_layer)
    m = mean_fam(maps)
    assert m.shape == (1, 1, 28, 28)
    torch.testing.assert_close(m[0], maps.mean(0))
    assert 0 <= m.min() and m.max() <= 1
    with pytest.raises(ValueError, match='expected'): mean_fam(maps[:, 0])
    with pytest.raises(ValueError, match=r'\(B, 1, H, W\)'): mean_fam(maps.expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match='empty'): mean_fam(maps[:0])


# --- the highlighter ----------------------------------------------------------------------------------------

def test_highlighter_learns_and_reports(trained28):
    model, report = trained28
    assert not model.training
    assert report['accuracy'] > 0.6, report                       # two epochs on 1440 + 1440 images
    for k in ('accuracy_real', 'accuracy_generated', 'auroc', 'n_test_real', 'epoch_losses', 'warnings', 'config'):
        assert k in report
    assert report['n_test_real'] == 160 and report['n_train_real'] == 1440
    assert HighlighterConfig.from_dict(json.loads(json.dumps(report['config']))) == highlighter_preset('cpu', epochs=2)

def test_highlighter_reproducible_and_leaves_global_rng():
    real, gen = _fashion(16, 200), _fashion(16, 200, offset=200).flip(-1)
    cfg = highlighter_preset('smoke', epochs=1)
    state = torch.random.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        a, ra = train_flaw_highlighter(real, gen, cfg=cfg, generator=make_generator(7), progress=False)
        b, rb = train_flaw_highlighter(real, gen, cfg=cfg, generator=make_generator(7), progress=False)
        c, _ = train_flaw_highlighter(real, gen, cfg=cfg, generator=make_generator(8), progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and ra['epoch_losses'] == rb['epoch_losses']
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)

def test_highlighter_warnings():
    real = _fashion(16, 400)
    same = _fashion(16, 400, offset=400)
    stamped = same.clone(); stamped[:, :, -4:, -4:] = 1.0
    cfg = highlighter_preset('smoke')
    with pytest.warns(UserWarning, match='near chance'):
        _, r = train_flaw_highlighter(real, same, cfg=cfg, generator=make_generator(0), progress=False)
    assert any('near chance' in w for w in r['warnings'])
    with pytest.warns(UserWarning, match='trivial cue'):
        _, r = train_flaw_highlighter(real, stamped, cfg=cfg, generator=make_generator(0), progress=False)
    assert r['accuracy'] >= 0.99

@pytest.mark.parametrize('real, gen, match', [
    (torch.zeros(10, 1, 16, 16), torch.zeros(10, 1, 28, 28), 'generated has shape'),
    (torch.zeros(10, 3, 16, 16), torch.zeros(10, 1, 16, 16), 'real has shape'),
    (torch.zeros(1, 1, 16, 16), torch.zeros(10, 1, 16, 16), 'at least 2'),
    (torch.zeros(10, 1, 16, 16, dtype=torch.uint8), torch.zeros(10, 1, 16, 16), 'floating dtype'),
])
def test_highlighter_validation(real, gen, match):
    with pytest.raises(ValueError, match=match):
        train_flaw_highlighter(real, gen, cfg=highlighter_preset('smoke'), progress=False)


# --- artifacts and the localization benchmark -----------------------------------------------------------------

@pytest.mark.parametrize('kind', ARTIFACT_KINDS)
def test_artifacts_stay_in_their_mask_on_the_object(kind):
    x = _fashion(28, 64, split='test')
    y, masks, info = inject_artifacts(x, kind, patch=8, generator=make_generator(1))
    assert y.shape == x.shape and masks.shape == (64, 1, 28, 28) and masks.dtype == torch.bool
    assert not ((y != x) & ~masks).any()
    assert (masks.sum((1, 2, 3)) == 64).all() and info['weak'] == 0
    change = ((y - x).abs() * masks).sum((1, 2, 3)) / 64
    assert (change >= 0.05).all()
    assert (((x > OBJECT_LEVEL) & masks).sum((1, 2, 3)) >= 32).all()
    assert y.min() >= -1 and y.max() <= 1

def test_localization_scores_known_maps():
    masks = torch.zeros(4, 1, 12, 12, dtype=torch.bool); masks[:, :, 3:7, 5:9] = True
    s = localization_scores(masks.float(), masks, top_frac=16 / 144)
    assert s['hit'].tolist() == [1.0] * 4 and torch.allclose(s['iou'], torch.ones(4)) and torch.allclose(s['auroc'], torch.ones(4))
    off = torch.zeros_like(masks, dtype=torch.float32); off[:, :, 0, 0] = 1
    s = localization_scores(off, masks)
    assert s['hit'].tolist() == [0.0] * 4 and torch.allclose(s['auroc'], torch.full((4,), 0.5), atol=0.01)

def test_benchmark_smoke_and_report(tmp_path):
    cfg = localization_preset('smoke', replicates=2)
    assert LocalizationConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        res = fam_localization_benchmark(_fashion(16, 1200), _fashion(16, 200, split='test'), cfg=cfg, progress=False)
    pk = res['per_kind']
    assert set(pk) == set(ARTIFACT_KINDS) | {'all'} and pk['all']['n'] == 5 * cfg.n_test
    assert len(res['highlighters']) == 2 and len(res['models']) == 2
    for r in pk.values():
        assert len(r['fam_per_seed']['hit']) == 2
        assert abs(np.mean(r['fam_per_seed']['hit']) - r['fam']['hit'][0]) < 1e-6     # equal n per highlighter
        for m in ('fam', 'random', 'centre', 'object'):
            for metric in ('hit', 'iou', 'auroc'):
                mean, lo, hi = r[m][metric]
                assert lo <= mean <= hi
    paths = write_fam_localization_report(res, tmp_path, command='make something')
    md = paths['md'].read_text()
    assert '87 %' in md and 'What differs' in md and 'make something' in md and '| all |' in md
    assert paths['png'].stat().st_size > 10_000
    assert json.loads(paths['json'].read_text())['per_kind']['all']['n'] == 5 * cfg.n_test
    with pytest.raises(ValueError, match='train_images has 10 images'):
        fam_localization_benchmark(_fashion(16, 10), _fashion(16, 200, split='test'), cfg=cfg, progress=False)
