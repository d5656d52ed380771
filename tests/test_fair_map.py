"""The fair study's mFAM at the phase boundary, from its committed base 1 and shared highlighter: the regression test of
the all-zero map that voided the first srd run (PROTOCOL.md, amendment log, 2026-12-02)."""
import json
from pathlib import Path

import pytest
import torch

from sdr.config import ExperimentConfig, config_hash, preset
from sdr.train import SRDTrainer

RUNS = Path(__file__).resolve().parent.parent / 'reports' / 'runs' / 'e11_controls'
BASE = RUNS / 'base-d08e6b31d7' / 'train' / 'checkpoints' / 'last.pt'
VOID = RUNS / '0259b10072' / 'config.json'   # the void srd run of unit (1, 0): it read Grad-CAM before the BatchNorm

needs_records = pytest.mark.skipif(not BASE.exists() or not VOID.exists(), reason='the fair base 1 checkpoint is not in this checkout')

def phase_boundary_trainer(tmp_path, read: str) -> SRDTrainer:
    cfg = ExperimentConfig.from_dict(json.load(open(VOID))['config'])
    cfg = cfg.replace(srd=cfg.srd.replace(cam_read=read))
    t = SRDTrainer(cfg, tmp_path / read, base_checkpoint=BASE, device='cpu')
    assert t.resume() and t.step == cfg.srd.base_steps
    t.train_highlighter()   # loads the committed shared highlighter: nothing is fitted
    assert 'shared_from' in t.highlighter_report
    return t

def test_the_fair_preset_reads_the_activation_and_old_run_ids_stay_valid():
    assert preset('fair').srd.cam_read == 'activation'
    assert preset('cpu').srd.cam_read == 'conv'
    cfg = ExperimentConfig.from_dict(json.load(open(VOID))['config'])
    assert config_hash(cfg) == '0259b10072'   # cam_read at its default is not hashed
    assert config_hash(cfg.replace(srd=cfg.srd.replace(cam_read='activation'))) != '0259b10072'

@needs_records
def test_reading_before_the_batchnorm_gives_all_zero_maps_and_the_run_stops(tmp_path):
    t = phase_boundary_trainer(tmp_path, 'conv')
    with pytest.raises(RuntimeError, match="exactly 0 at the phase boundary.*cam_read='conv'"):
        t.refresh_mfam()

@needs_records
def test_reading_the_activation_gives_a_map_with_a_shape(tmp_path):
    t = phase_boundary_trainer(tmp_path, 'activation')
    t.refresh_mfam()
    M = t.mfam
    assert M.shape == (1, 1, 16, 16)
    assert float(M.amax()) > 0.2                     # not zero ...
    assert float(M.std()) > 0.05 * float(M.mean())   # ... and not constant
    assert t.mfam_history[-1]['peak'] == pytest.approx(float(M.amax()), abs=1e-6)
