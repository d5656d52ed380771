"Started by torchrun from tests/test_distributed.py: train with `sdr.distributed.main`, then dump this rank's state."
import sys

import torch

import sdr.core  # noqa: F401  (first: torchvision beside the CPU torch)
from sdr.distributed import main

if __name__ == '__main__':
    argv = sys.argv[1:]
    dump = argv[argv.index('--dump') + 1]; del argv[argv.index('--dump'):argv.index('--dump') + 2]
    tr = main(argv)
    torch.save({'model': tr.model.state_dict(), 'ema': tr.ema.model.state_dict(), 'step': tr.step,
                'loss': [r['loss'] for r in tr.log], 'mfam': [h['mfam'] for h in tr.mfam_history],
                'mfam_steps': [h['step'] for h in tr.mfam_history], 'highlighter': tr.highlighter.state_dict()},
               f'{dump}.rank{tr.rank}.pt')
