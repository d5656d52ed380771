"""Build the offline docs site (`make docs`): every library notebook as HTML with its committed outputs, and an index.

The notebooks are committed executed (`make notebooks`), so nothing runs here: `jupyter nbconvert --to html` renders
each one as a reader sees it on the repository page, and `index.html` lists them with their one-line summaries.
(nbdev_docs needs Quarto, which is not installable offline; nbdev's `proc_nbs` re-executes cells and needs every
import in a cell of its own.) Equations are typeset by MathJax, which the HTML loads from its CDN when online.
"""
import argparse, html, json, subprocess, sys
from pathlib import Path

def summary(nb_path: Path) -> tuple[str, str]:
    "(title, one-line summary) from a notebook's first markdown cell: its `# title` and its `> summary` line."
    cell = next(c for c in json.loads(nb_path.read_text())['cells'] if c['cell_type'] == 'markdown')
    lines = ''.join(cell['source']).splitlines()
    title = next((l[2:].strip() for l in lines if l.startswith('# ')), nb_path.stem)
    return title, next((l[1:].strip() for l in lines if l.startswith('>')), '')

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default='_docs', help='output folder (default: _docs, git-ignored)')
    a = p.parse_args(argv)
    out, nbs = Path(a.out), sorted(Path('nbs').glob('*.ipynb'))
    if not nbs: sys.exit("no notebooks under nbs/: run from the repository root")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, '-m', 'nbconvert', '--to', 'html', '--log-level', 'ERROR', '--output-dir', str(out),
                    *map(str, nbs)], check=True)
    rows = ''.join(f'<li><a href="{n.stem}.html">{html.escape(t)}</a>: {html.escape(s)}</li>\n'
                   for n, (t, s) in ((n, summary(n)) for n in nbs))
    (out / 'index.html').write_text('<!doctype html><meta charset="utf-8"><title>sdr</title>\n<h1>sdr: the notebooks</h1>\n'
                                    '<p>Self-Refining Diffusion (arXiv 2512.08774), a reproducibility study. Each page is a '
                                    'notebook of <code>nbs/</code> with its committed outputs.</p>\n<ol>\n' + rows + '</ol>\n')
    print(f'{out / "index.html"}: {len(nbs)} notebooks')

if __name__ == '__main__': main()
