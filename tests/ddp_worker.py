"Started by torchrun from tests/test_distributed.py: train with `sdr.distributed.main`, then dump this rank's state."
import sys

import torch

from sdr.torchvision_shim import patch_torchvision
patch_torchvision()   # before torchvision is imported (by torch-fidelity, diffusers, grad-cam) beside the CPU torch
import os
from torch.nn.parallel import DistributedDataParallel
from sdr.distributed import DistributedSRDTrainer, main


def _wrap_once(self):
    "The u-vit fork's DDP: wrapped once, at the start; parameters added later (the map projections) are never all-reduced."
    if self._ddp is None: self._ddp = DistributedDataParallel(self.model, find_unused_parameters=False)
    return self._ddp

if __name__ == '__main__':
    argv = sys.argv[1:]
    dump = argv[argv.index('--dump') + 1]; del argv[argv.index('--dump'):argv.index('--dump') + 2]
    if os.environ.get('SDR_TEST_WRAP_ONCE') == '1': DistributedSRDTrainer.denoiser = _wrap_once
    tr = main(argv)
    torch.save({'model': tr.model.state_dict(), 'ema': tr.ema.model.state_dict(), 'step': tr.step,
                'loss': [r['loss'] for r in tr.log], 'mfam': [h['mfam'] for h in tr.mfam_history],
                'mfam_steps': [h['step'] for h in tr.mfam_history], 'highlighter': tr.highlighter.state_dict()},
               f'{dump}.rank{tr.rank}.pt')
