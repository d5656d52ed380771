"""Inpainting (notebook 08b): masks, check_mask errors, RePaint's exactness on known pixels, an oracle denoiser, metrics."""
import math

import pytest
import torch

from sdr.core import make_generator
from sdr.config import preset
from sdr.diffusion import GaussianDiffusion
from sdr.unet import build_unet
from sdr.inpainting import (InpaintConfig, box_masks, check_mask, free_form_masks, inpaint_eval, inpainting_originals,
                            make_masks, masked_mse, masked_psnr, repaint, repaint_schedule)

DIFF = GaussianDiffusion.from_config(preset('smoke').diffusion)


@pytest.fixture(scope='module')
def net():
    torch.manual_seed(0)
    m = build_unet(preset('smoke'))
    with torch.no_grad():
        for p in m.parameters(): p.add_(0.05 * torch.randn_like(p))
    return m.eval()


@pytest.fixture(scope='module')
def image():
    return torch.rand(3, 1, 16, 16, generator=make_generator(7)) * 2 - 1


class Oracle:
    "Returns the exact noise of x_t for a known x0: a perfect denoiser of that image."
    def __init__(self, x0): self.x0 = x0
    def __call__(self, x, t):
        a = DIFF.coef['alphas_cumprod'][t].float().view(-1, 1, 1, 1)
        return (x - a.sqrt() * self.x0) / (1 - a).sqrt()


@pytest.mark.parametrize('kind', ['box', 'free_form'])
def test_masks_binary_seeded_nontrivial(kind):
    m = make_masks(kind, 100, 16, generator=make_generator(0))
    assert m.shape == (100, 1, 16, 16) and set(m.unique().tolist()) <= {0.0, 1.0}
    unknown = 1 - m.mean(dim=(1, 2, 3))
    assert unknown.min() > 0 and unknown.max() < 1
    assert torch.equal(m, make_masks(kind, 100, 16, generator=make_generator(0)))
    assert not torch.equal(m, make_masks(kind, 100, 16, generator=make_generator(1)))


def test_box_sizes_follow_frac():
    m = box_masks(200, 32, frac=(0.5, 0.5), generator=make_generator(0))
    assert ((1 - m).sum(dim=(1, 2, 3)) == 16 * 16).all()


@pytest.mark.parametrize('mask, msg', [
    (torch.ones(2, 1, 16, 16), r'mask.shape=\(2, 1, 16, 16\): expected'),
    (torch.ones(3, 2, 16, 16), r'mask.shape=\(3, 2, 16, 16\)'),
    (torch.ones(3, 1, 15, 16), r'mask.shape=\(3, 1, 15, 16\)'),
    (torch.ones(3, 16, 16), r'mask.shape=\(3, 16, 16\)'),
    (torch.full((3, 1, 16, 16), 0.5), 'must be binary'),
    (torch.full((3, 1, 16, 16), 2), 'must be binary'),
    (torch.ones(3, 1, 16, 16, dtype=torch.complex64), 'dtype'),
])
def test_bad_masks(image, mask, msg):
    with pytest.raises(ValueError, match=msg):
        check_mask(mask, image)
    with pytest.raises(ValueError, match=msg):
        repaint(lambda x, t: x, DIFF, image, mask, steps=2, generator=make_generator(0))


def test_oracle_recovers_the_whole_image(image):
    "With a perfect denoiser, the unknown region comes back as the original too (checks the reverse step and the jumps)."
    m = box_masks(3, 16, generator=make_generator(2))
    out = repaint(Oracle(image), DIFF, image, m, steps=25, jump_length=4, jump_n_sample=3, generator=make_generator(0))
    torch.testing.assert_close(out, image, atol=1e-4, rtol=0)


def test_known_pixels_exact_unknown_changed(net, image):
    m = free_form_masks(3, 16, generator=make_generator(4))
    out = repaint(net, DIFF, image, m, steps=8, generator=make_generator(0))
    k = m.bool().expand_as(image)
    assert torch.equal(out[k], image[k])
    assert (out[~k] - image[~k]).abs().mean() > 0.1


def test_all_known_mask_returns_the_original(net, image):
    calls = []
    model = lambda x, t: (calls.append(len(x)), net(x, t))[1]
    out = repaint(model, DIFF, image, torch.ones(1, 1, 16, 16), steps=8, generator=make_generator(0))
    assert torch.equal(out, image)
    sched = repaint_schedule(8)
    assert len(calls) == sum(b < a for a, b in zip(sched, sched[1:]))   # the chain ran: the equality is the paste
    raw = repaint(net, DIFF, image, torch.zeros(1, 1, 16, 16), steps=8, generator=make_generator(0))
    assert (raw - image).abs().mean() > 0.1                              # what the chain alone gives is not the image


def test_schedule_and_reproducibility(net, image):
    assert repaint_schedule(3, 1, 2) == [2, 1, 2, 1, 0, 1, 0, -1]
    m = box_masks(3, 16, generator=make_generator(0))
    a = repaint(net, DIFF, image, m, steps=5, generator=make_generator(9))
    b = repaint(net, DIFF, image, m, steps=5, generator=make_generator(9))
    assert torch.equal(a, b) and net.training is False


def test_masked_metrics():
    x = torch.zeros(1, 1, 2, 2); y = x.clone(); y[0, 0, 0, 0] = 0.2          # 0.1 in unit range
    m = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    assert math.isclose(float(masked_mse(y, x, m)[0]), 0.01, rel_tol=1e-5)
    assert math.isclose(masked_psnr(0.01), 20.0)
    with pytest.raises(ValueError, match='no unknown pixel'):
        masked_mse(y, x, torch.ones(1, 1, 2, 2))


def test_originals_disjoint_from_reference():
    data = preset('smoke').data
    o = inpainting_originals(data, 200, n_real=2500)
    assert len(o) == 200
    with pytest.raises(ValueError, match='disjoint'):
        inpainting_originals(data, 200, n_real=9900)


def test_inpaint_eval_same_masks_for_every_model(net):
    data = preset('smoke').data
    cfg = InpaintConfig(n_images=6, steps=3, jump_length=1, batch_size=4)
    orig = inpainting_originals(data, 6, n_real=100)
    r1 = inpaint_eval(net, DIFF, orig, cfg, noise_seed=0)
    r2 = inpaint_eval(lambda x, t: torch.zeros_like(x), DIFF, orig, cfg, noise_seed=1)
    for kind in cfg.kinds:
        assert torch.equal(r1[kind]['masks'], r2[kind]['masks']) and r1[kind]['inpainted'].shape == (6, 1, 16, 16)
        assert r1[kind]['mse'] > 0


@pytest.mark.parametrize('kw, msg', [({'kinds': ('circle',)}, "kinds\\[i\\]='circle'"), ({'steps': 0}, 'steps=0'),
                                     ({'eta': 1.5}, 'eta=1.5'), ({'stroke_width_frac': (0.0, 0.1)}, 'min must be > 0'),
                                     ({'strokes': (3, 1)}, 'min must be <= max'), ({'n_images': 0}, 'n_images=0')])
def test_bad_inpaint_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        InpaintConfig(**kw)


def test_mean_fill_reference():
    from sdr.inpainting import mean_fill
    x = torch.tensor([[[[1.0, 3.0], [5.0, 0.0]]]]) / 5
    m = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])
    assert torch.allclose(mean_fill(x, m), torch.tensor([[[[1.0, 3.0], [5.0, 3.0]]]]) / 5)
