"""The U-ViT backbone (notebook 02b) through the trainers: lambda = 0 and M = 0 are the baseline bit for bit, the map never
reaches the extra tokens, class-conditional models at several token grids, the long skips, exact resume, bad patch sizes."""
import pytest
import torch
import torch.nn.functional as F

from sdr.core import assert_same_weights
from sdr.config import ConditionalConfig, UViTConfig, preset
from sdr.srd import add_map_projections, modulate_attention
from sdr.train import SRDTrainer, load_checkpoint
from sdr.unet import attention_blocks
from sdr.uvit import PatchAttention, UViT, build_backbone, build_uvit, uvit_preset


def _cfg(mechanism='none', *, steps=40, uvit=None, **srd):
    cfg = preset('smoke', uvit=uvit or uvit_preset('smoke'))
    return cfg.replace(train=cfg.train.replace(steps=steps, checkpoint_every=10),
                       srd=cfg.srd.replace(mechanism=mechanism, **srd))


def _train(cfg, out, trainer=SRDTrainer, **kw):
    return trainer(cfg, out, device='cpu', progress=False, **kw).fit()


def _same_weights(a, b): assert_same_weights(a, b, names=a.state_dict())


class ZeroMapTrainer(SRDTrainer):
    "SRD whose mFAM is all zeros (every mechanism then has nothing to amplify or modulate)."
    def reduce_maps(self, maps): return torch.zeros_like(super().reduce_maps(maps))


def test_trainer_builds_the_uvit(tmp_path):
    tr = SRDTrainer(_cfg(), tmp_path, device='cpu', progress=False)
    assert isinstance(tr.model, UViT) and len(attention_blocks(tr.model)) == uvit_preset('smoke').depth


@pytest.mark.parametrize('srd_blocks', ['in_out', 'all'])
def test_lambda_zero_and_zero_map_train_like_the_baseline(tmp_path, srd_blocks):
    vit = uvit_preset('smoke').replace(srd_blocks=srd_blocks)
    base = _train(_cfg('none', uvit=vit), tmp_path / 'base')
    zero_lambda = _train(_cfg('combined', uvit=vit, lambda_f=0.0, lambda_r=0.0), tmp_path / 'zl')
    zero_map = _train(_cfg('combined', uvit=vit, lambda_f=0.5, lambda_r=0.5, forward_variant='uvit_code'), tmp_path / 'zm',
                      trainer=ZeroMapTrainer)
    assert len(zero_lambda.mfam_history) == 1 and zero_map.mfam.abs().max() == 0   # refinement did run, with M = 0
    for other in (zero_lambda, zero_map):
        assert [r['loss'] for r in base.log] == [r['loss'] for r in other.log]
        _same_weights(base.model, other.model)


def test_srd_changes_uvit_training_when_lambda_positive(tmp_path):
    base = _train(_cfg('none'), tmp_path / 'b')
    srd = _train(_cfg('combined', lambda_f=0.5, lambda_r=0.5, forward_variant='uvit_code'), tmp_path / 's')
    assert [r['loss'] for r in base.log][:3] == [r['loss'] for r in srd.log][:3]        # the base phase is shared
    assert not torch.equal(base.model.patch_embed.weight, srd.model.patch_embed.weight)  # the refinement is not
    x = srd.sample(4, steps=5)
    assert x.shape == (4, 1, 16, 16) and x.abs().max() <= 1


def test_identical_outputs_at_lambda_zero_and_zero_map():
    torch.manual_seed(0)
    cfg = preset('smoke', uvit=uvit_preset('smoke').replace(srd_blocks='all'), conditional=ConditionalConfig())
    m = build_uvit(cfg).eval()
    add_map_projections(m, seed=1)
    x, t, c = torch.randn(3, 1, 16, 16), torch.tensor([1, 50, 150]), torch.randn(3, m.emb_dim)
    M = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        ref = m(x, t, c)
        for proj in ('none', 'conv'):
            with modulate_attention(m, M, 0.0, proj=proj): assert torch.equal(m(x, t, c), ref)
        with modulate_attention(m, torch.zeros_like(M), 0.3): assert torch.equal(m(x, t, c), ref)
        with modulate_attention(m, M, 0.3): assert not torch.allclose(m(x, t, c), ref)
        assert torch.equal(m(x, t, c), ref)


def _keys_at_the_door(model, run):
    "For every door block call while `run()` runs: (keys as computed, keys the attention then uses)."
    pairs, blocks = [], attention_blocks(model)
    for b in blocks:
        def wrap(b=b, qkv=b.qkv, attend=b.attend):
            b.qkv = lambda x: (lambda qkv_: (pairs.append([qkv_[1].clone()]), qkv_)[1])(qkv(x))
            b.attend = lambda q, k, v: (pairs[-1].append(k.clone()), attend(q, k, v))[1]
        wrap()
    try: run()
    finally:
        for b in blocks: del b.qkv, b.attend
    return pairs


@pytest.mark.parametrize('image_size,patch,label', [(16, 2, False), (16, 2, True), (16, 4, True), (28, 4, True), (32, 2, True)])
@pytest.mark.parametrize('proj', ['none', 'conv'])
def test_extra_tokens_are_untouched_by_the_map(image_size, patch, label, proj):
    torch.manual_seed(0)
    m = UViT(UViTConfig(patch_size=patch, embed_dim=32, depth=2, num_heads=2, srd_blocks='all'), image_size=image_size,
             label_token=label).eval()
    add_map_projections(m, seed=3)
    n_tok = (image_size // patch) ** 2
    x, t = torch.randn(2, 1, image_size, image_size), torch.tensor([3, 90])
    c = torch.randn(2, m.emb_dim) if label else None
    M = torch.rand(1, 1, image_size, image_size)
    def modulated():
        with modulate_attention(m, M, 0.7, proj=proj): m(x, t, c)
    with torch.no_grad(): pairs = _keys_at_the_door(m, modulated)
    assert len(pairs) == 3                                           # in, mid and out block
    e = m.extras
    assert e == 1 + label
    for blk, (k_computed, k_used) in zip(attention_blocks(m), pairs):
        assert k_used.shape[2] == e + n_tok
        assert torch.equal(k_used[:, :, :e], k_computed[:, :, :e])   # the time (and label) token: weight exactly 1
        assert not torch.equal(k_used[:, :, e:], k_computed[:, :, e:])
        M_emb = blk.map_proj(M) if proj == 'conv' else M             # patch tokens: K * (1 + lambda M_emb on the grid)
        w = 1 + 0.7 * F.interpolate(M_emb, size=m.grid, mode='bilinear', align_corners=False).flatten()
        torch.testing.assert_close(k_used[:, :, e:], k_computed[:, :, e:] * w[None, None, :, None])


def test_the_door_sees_only_patch_tokens():
    att = PatchAttention(16, num_heads=2, extras=2, grid=(2, 3))
    seen = []
    att.kv_modulation = lambda b, k, v, hw: (seen.append((tuple(k.shape), hw)), (k * 0, v * 0))[1]
    x = torch.randn(4, 2 + 6, 16)
    with torch.no_grad():
        q, k, v = att.qkv(x)
        out = att(x)
    assert seen == [((4, 2, 6, 8), (2, 3))]
    # with every patch key and value zeroed, what remains of the output comes from the extra tokens alone
    k0, v0 = k.clone(), v.clone(); k0[:, :, 2:] = 0; v0[:, :, 2:] = 0
    att.kv_modulation = None
    with torch.no_grad(): torch.testing.assert_close(out, att.attend(q, k0, v0))


@pytest.mark.parametrize('image_size,patch', [(16, 2), (16, 4), (28, 4)])
def test_class_conditional_trains_at_several_grids(tmp_path, image_size, patch):
    from sdr.conditional import ConditionalTrainer, ConditionalUNet
    cfg = preset('smoke', data={'image_size': image_size}, srd={'highlighter': {'image_size': image_size}, 'mfam_batch': 10},
                 uvit=uvit_preset('smoke').replace(patch_size=patch), conditional=ConditionalConfig(mfam='per_class'))
    cfg = cfg.replace(train=cfg.train.replace(steps=36), srd=cfg.srd.replace(mechanism='combined', forward_variant='uvit_code'))
    tr = _train(cfg, tmp_path, trainer=ConditionalTrainer)
    assert isinstance(tr.model, ConditionalUNet) and isinstance(tr.model.unet, UViT)
    assert tr.model.unet.extras == 2 and tr.model.unet.grid == (image_size // patch,) * 2
    assert tr.step == 36 and tr.mfam.shape == (10, 1, image_size, image_size)   # one map per class
    assert all(torch.isfinite(torch.tensor(r['loss'])) for r in tr.log)
    x = tr.sample(10, steps=3)
    assert x.shape == (10, 1, image_size, image_size) and torch.isfinite(x).all()


def test_long_skips_wire_each_out_block_to_its_in_block():
    m = UViT(UViTConfig(patch_size=2, embed_dim=32, depth=8, num_heads=2), image_size=16)
    outs, skips = {}, {}
    hooks = [b.register_forward_hook(lambda mod, a, out, i=i: outs.__setitem__(i, out)) for i, b in enumerate(m.in_blocks)]
    hooks += [b.register_forward_pre_hook(lambda mod, a, i=i: skips.__setitem__(i, a[1])) for i, b in enumerate(m.out_blocks)]
    with torch.no_grad(): m(torch.randn(2, 1, 16, 16), torch.tensor([5, 6]))
    for h in hooks: h.remove()
    n = len(m.in_blocks)
    assert n == 4 and sorted(skips) == list(range(n))
    for i in range(n): assert skips[i] is outs[n - 1 - i], i
    assert all(b.skip_linear is not None for b in m.out_blocks)
    assert all(b.skip_linear is None for b in [*m.in_blocks, m.mid_block])
    with pytest.raises(ValueError, match='an out-block needs the skip of its in-block'):
        m.out_blocks[0](torch.randn(1, 65, 32))


def test_exact_resume_through_refinement(tmp_path):
    cfg = _cfg('combined', proj='conv', forward_variant='uvit_code')
    straight = _train(cfg, tmp_path / 'straight')
    SRDTrainer(cfg, tmp_path / 'split', device='cpu', progress=False).fit(35)   # stops mid-refinement (mFAM at step 30)
    resumed = _train(cfg, tmp_path / 'split')
    a, b = load_checkpoint(tmp_path / 'straight/checkpoints/last.pt'), load_checkpoint(tmp_path / 'split/checkpoints/last.pt')
    assert a['step'] == b['step'] == 40
    assert any('.map_proj.' in k for k in a['model'])
    assert_same_weights(a['model'], b['model'], 'model'); assert_same_weights(a['ema']['model'], b['ema']['model'], 'EMA model')
    resumed_loss = {r['step']: r['loss'] for r in resumed.log}             # (+ the entry of the stop at step 35)
    assert {r['step']: r['loss'] for r in straight.log} == {s: resumed_loss[s] for s in (10, 20, 30, 40)}
    assert torch.equal(straight.mfam, resumed.mfam)


@pytest.mark.parametrize('image_size,patch', [(16, 3), (28, 8), (16, 32)])
def test_bad_patch_size_is_a_clear_error(image_size, patch):
    with pytest.raises(ValueError, match=rf'uvit.patch_size={patch} does not divide image_size={image_size}; allowed patch sizes'):
        preset('smoke', data={'image_size': image_size}, srd={'highlighter': {'image_size': image_size}},
               uvit=UViTConfig(patch_size=patch))
    with pytest.raises(ValueError, match=rf'patch_size={patch} does not divide image_size={image_size}'):
        UViT(UViTConfig(patch_size=patch), image_size=image_size)


def test_label_token_contract():
    m = build_backbone(preset('smoke', uvit=uvit_preset('smoke'), conditional=ConditionalConfig()))
    assert m.label_token and m.extras == 2
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([1, 2])
    with pytest.raises(ValueError, match='built with a label token'): m(x, t)
    with pytest.raises(ValueError, match=r'cond_emb.shape=\(2, 7\)'): m(x, t, torch.zeros(2, 7))
    plain = build_backbone(preset('smoke', uvit=uvit_preset('smoke')))
    with pytest.raises(ValueError, match='has no label token'): plain(x, t, torch.zeros(2, plain.emb_dim))
    from sdr.conditional import ConditionalUNet
    with pytest.raises(ValueError, match='without a label token'): ConditionalUNet(plain, num_classes=10)


def test_placement_in_out_skips_the_mid_block_and_all_does_not():
    x, t, M = torch.randn(2, 1, 16, 16), torch.tensor([4, 40]), torch.rand(1, 1, 16, 16)
    outs = {}
    for where in ('in_out', 'all'):
        torch.manual_seed(0)
        m = build_backbone(preset('smoke', uvit=uvit_preset('smoke').replace(depth=4, srd_blocks=where))).eval()
        doors = attention_blocks(m)
        assert (m.mid_block.attn in doors) == (where == 'all') and len(doors) == 4 + (where == 'all')
        assert all(b.attn in doors for b in [*m.in_blocks, *m.out_blocks])
        with torch.no_grad(), modulate_attention(m, M, 0.5): outs[where] = m(x, t)
    assert not torch.allclose(outs['in_out'], outs['all'])   # same weights (same seed): only the mid-block's door differs


def test_bf16_autocast_forward_and_backward():
    from sdr.core import precision_context
    torch.manual_seed(0)
    m = build_backbone(preset('smoke', uvit=uvit_preset('smoke')))
    x, t = torch.randn(4, 1, 16, 16), torch.tensor([1, 2, 3, 4])
    with precision_context('bf16', torch.device('cpu')), modulate_attention(m, torch.rand(1, 1, 16, 16), 0.1):
        out = m(x, t)
    out.float().square().mean().backward()
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
