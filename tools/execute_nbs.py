"""Execute the library notebooks at the smoke scale and save them with their outputs (`make notebooks`).

Each notebook runs top to bottom in its own directory, as `nbdev_test` runs it: cells marked `#| slow` (and
`#| eval: false`) are not run and keep the outputs of their last real run; every other code cell's old outputs are
replaced. Progress bars are off (`TQDM_DISABLE=1`), so that the saved outputs hold only what the cells print and
draw. A notebook that raises is left unchanged on disk and the command exits 1. `nbdev_clean` then strips metadata.
"""
import argparse, os, sys, time
from pathlib import Path

os.environ['TQDM_DISABLE'] = '1'
os.environ.setdefault('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.process import extract_directives

# a warning shows as `UserWarning: message`, not with the file path of this checkout and a line number
WARNINGS_WITHOUT_PATHS = "import warnings; warnings.formatwarning = lambda m, c, *a, **k: f'{c.__name__}: {m}\\n'"

def not_run(cell, slow: bool = False) -> bool:
    "True for the cells left as they are: markdown, `nbdev_export()` calls, `#| eval: false` and (unless `slow`) `#| slow` cells."
    if cell.cell_type != 'code' or 'nbdev_export' + '(' in cell.source: return True
    directives = extract_directives(cell, remove=False)   # as nbdev_test reads them
    if directives.get('eval:', [''])[0].lower() == 'false' or ('slow' in directives and not slow): return True
    cell.outputs, cell.execution_count = [], None   # outputs of the last run go; a silent cell then shows none
    return False

def execute(path: Path, slow: bool = False) -> float:
    "Run notebook `path` (with its `#| slow` cells if `slow`) and write it back with its outputs; the seconds it took."
    t0 = time.perf_counter()
    nb = read_nb(path)
    shell = CaptureShell(path)
    try:
        with working_directory(path.parent):
            shell.run(WARNINGS_WITHOUT_PATHS)
            shell.run_all(nb, exc_stop=True, preproc=lambda c: not_run(c, slow))
    except Exception:
        sys.stderr.write(shell.prettytb(fname=path) + '\n'); raise
    write_nb(nb, path)
    return time.perf_counter() - t0

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='*', help='notebooks to execute (default: every nbs/*.ipynb)')
    p.add_argument('--slow', action='store_true', help='run the `#| slow` cells too (minutes each), refreshing their outputs')
    a = p.parse_args(argv)
    paths = [Path(n) for n in a.notebooks] or sorted(Path('nbs').glob('*.ipynb'))
    for n in paths:
        if not n.is_file() or n.suffix != '.ipynb': p.error(f'notebooks: {str(n)!r} is not a notebook file')
    failed = []
    for n in paths:
        try: print(f'{n}: {execute(n, a.slow):.0f} s', flush=True)
        except Exception: failed.append(str(n))
    if failed: sys.exit(f'failed: {" ".join(failed)} (left unchanged)')

if __name__ == '__main__': main()
