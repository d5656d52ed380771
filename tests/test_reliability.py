"""Issue 20: one writer per run directory, jobs die with their grid, damaged checkpoints are set aside."""
import json, os, random, signal, subprocess, sys, time, uuid
from pathlib import Path

import pytest

from sdr.config import preset
from sdr.runs import EvalConfig
from sdr.tables import collect
from sdr.grid import run_grid

GRID = """
import json, sys
from sdr.config import preset
from sdr.runs import EvalConfig
from sdr.tables import collect
from sdr.grid import run_grid
c = preset('smoke')
n = int(sys.argv[3])
c = c.replace(train=c.train.replace(steps=n, checkpoint_every=5), srd=c.srd.replace(base_steps=min(30, n // 2), cycle=5))
cfgs = [c.replace(name=v, seed=0, srd=c.srd.replace(mechanism=m)) for v, m in (('baseline', 'none'), ('combined', 'combined'))]
nb = None if sys.argv[2] == 'notebook' else False
run_grid('g', cfgs, root=sys.argv[1], ev=EvalConfig(n_samples=8, n_real=8, sample_steps=3, metric='none', heldout=64), notebook=nb)
print('TABLE', json.dumps(sorted((r['name'], r['seed'], r['heldout_loss'], r['steps']) for r in collect(sys.argv[1], 'g'))))
"""

def _grid(root, *, mode='direct', steps=40, env=None, **kw):
    return subprocess.Popen([sys.executable, '-c', GRID, str(root), mode, str(steps)], start_new_session=True,
                            env={**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)

def _table(out: str):
    return next(l for l in out.splitlines() if l.startswith('TABLE '))

def test_two_grids_on_one_runs_dir_train_each_run_once(tmp_path):
    a, b = _grid(tmp_path), _grid(tmp_path)   # started together
    out_a, out_b = a.communicate(timeout=900)[0], b.communicate(timeout=900)[0]
    assert a.returncode == 0, out_a[-3000:]
    assert b.returncode == 0, out_b[-3000:]
    assert _table(out_a) == _table(out_b) and len(json.loads(_table(out_a)[6:])) == 2   # both finish, same table
    hist = json.loads((tmp_path / 'g' / 'summary.json').read_text())['history']
    assert len(hist) == 2 and sum(h['finished'] for h in hist) == 3, hist   # one base + two runs, each trained once
    assert 'waiting for' in out_a + out_b, 'the second grid never waited for the first: the test raced nothing'
    assert not list(tmp_path.rglob('error.json')) and not list(tmp_path.rglob('*.tmp*'))
    # records hold facts: run dirs relative to the runs root, no machine path
    assert str(tmp_path) not in (tmp_path / 'g' / 'summary.json').read_text()

def test_rerun_with_nothing_to_do_changes_no_file(tmp_path):
    p = _grid(tmp_path, steps=12); out = p.communicate(timeout=900)[0]; assert p.returncode == 0, out[-3000:]
    before = {f: f.stat().st_mtime_ns for f in tmp_path.rglob('*') if f.is_file()}
    p = _grid(tmp_path, steps=12); out2 = p.communicate(timeout=900)[0]; assert p.returncode == 0, out2[-3000:]
    after = {f: f.stat().st_mtime_ns for f in tmp_path.rglob('*') if f.is_file()}
    assert before == after and 'nothing to run' in out2 and _table(out) == _table(out2)

def test_damaged_run_checkpoint_is_set_aside_and_the_run_restarts(tmp_path, capsys):
    c = preset('smoke')
    c = c.replace(train=c.train.replace(steps=12, checkpoint_every=4), srd=c.srd.replace(base_steps=6, cycle=3, n_real=64,
                  n_generated=64, mechanism='combined'))
    ev = EvalConfig(n_samples=4, n_real=4, sample_steps=2, metric='none', heldout=16)
    from sdr.runs import run_dir_for
    run = run_dir_for(tmp_path, 'd', c)
    ck = run / 'train' / 'checkpoints' / 'last.pt'
    ck.parent.mkdir(parents=True); ck.write_bytes(b'PK\x03\x04 a copy killed half way')
    s = run_grid('d', [c], root=tmp_path, ev=ev, notebook=False, progress=True)
    assert len(s['finished']) == 2 and not s['failed']
    said = capsys.readouterr().out
    assert f'{ck} is damaged' in said and 'from its base checkpoint' in said
    assert len(list(ck.parent.glob('last.corrupt-*.pt'))) == 1 and 'set aside' in (run / 'job.log').read_text()

def _marked(mark: str) -> list[int]:
    "Processes whose environment carries `mark` (every descendant of the grid inherits it, whatever its session)."
    pids = []
    for d in Path('/proc').iterdir():
        if not d.name.isdigit(): continue
        try:
            if mark.encode() in (d / 'environ').read_bytes() and (d / 'stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z':
                pids.append(int(d.name))
        except OSError: pass
    return pids

@pytest.mark.slow
@pytest.mark.parametrize('how', ['SIGKILL', 'SIGTERM', 'SIGKILL of the parent shell'])
def test_no_process_of_a_killed_grid_remains(tmp_path, how):
    "Kill the outermost process at a random moment: every job (papermill and its kernel in their own session) stops."
    mark = f'SDR_TEST_MARK={uuid.uuid4().hex}'
    env = {mark.split('=')[0]: mark.split('=')[1]}
    if how.endswith('shell'):   # like make: the grid watches its caller (SDR_WATCH_PIDS) and stops when it dies
        p = subprocess.Popen(['bash', '-c', f'SDR_WATCH_PIDS=$$ {sys.executable} -c "$0" "$1" notebook 3000; true', GRID, str(tmp_path)],
                             start_new_session=True, env={**os.environ, 'OMP_NUM_THREADS': '1', **env},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        p = _grid(tmp_path, mode='notebook', steps=3000, env=env)
    t0 = time.time()
    while not list(tmp_path.glob('g/*/job.log')):   # the first job has started
        assert p.poll() is None and time.time() - t0 < 300; time.sleep(0.2)
    time.sleep(random.uniform(0, 15))
    assert len(_marked(mark)) > 1, 'no job was running at the kill: the test tests nothing'
    os.kill(p.pid, signal.SIGTERM if how == 'SIGTERM' else signal.SIGKILL)   # the outermost process only, not its group
    p.wait()
    t1 = time.time()
    while _marked(mark) and time.time() - t1 < 8: time.sleep(0.5)
    left = _marked(mark)
    for pid in left: os.kill(pid, signal.SIGKILL)   # clean up before failing
    assert not left, f'{len(left)} processes of the grid outlived it by 8 s'
    print(f'{how}: all processes gone {time.time() - t1:.1f} s after the kill')
    if how == 'SIGKILL':   # the grid itself died: its wall time so far survives, marked as a lower bound
        hist = json.loads((tmp_path / 'g' / 'summary.json').read_text())['history']
        assert hist[-1].get('running') and 'wall_seconds' in hist[-1], hist
