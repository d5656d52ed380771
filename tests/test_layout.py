"The installed package stands alone: it never points into a repository's source tree (issue 16)."
import os, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_editable_checkout_runs_jobs_through_its_run_notebook():
    import sdr.grid
    assert sdr.grid.RUN_NOTEBOOK == ROOT / 'nbs' / 'experiments' / 'run.ipynb'


def test_installed_package_does_not_point_into_a_source_tree(tmp_path):
    site = tmp_path / 'site-packages'
    shutil.copytree(ROOT / 'sdr', site / 'sdr', ignore=shutil.ignore_patterns('__pycache__'))
    env = {**os.environ, 'PYTHONPATH': str(site)}
    out = subprocess.run([sys.executable, '-c', 'import sdr, sdr.grid; print(sdr.__file__); print(sdr.grid.RUN_NOTEBOOK)'],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith(str(site)), out   # the copy was imported, not the checkout
    assert out[1] == 'None', out                # so jobs run as `python -m sdr.grid`
