"""Data loading: IDX parsing, Fashion-MNIST, user image folders (every error case fails clearly before training,
every valid layout loads right), resizing, ranges, DataOrder, image grids."""
import gzip
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import sdr.data as data
from sdr.config import DataConfig
from sdr.data import (DataOrder, ensure_fashion_mnist, image_grid, load_dataset, load_fashion_mnist, load_image_folder,
                      list_images, read_idx, resize_images, save_image_grid, to_model_range, to_unit_range)


def _img(path, size=(20, 12), mode='RGB', value=128):
    "Save a constant image of `mode` at `path` (parents created)."
    path.parent.mkdir(parents=True, exist_ok=True)
    fill = value if mode in ('L', 'P', '1') else (value,) * len(mode)
    Image.new(mode, size, fill).save(path)
    return path


def _idx(path, arr, *, magic_type=0x08, dims=None):
    "Write a gzip'd IDX file by hand (header: 00 00 type ndim, big-endian dims)."
    dims = arr.shape if dims is None else dims
    blob = bytes([0, 0, magic_type, len(dims)]) + b''.join(int(n).to_bytes(4, 'big') for n in dims) + arr.tobytes()
    with gzip.open(path, 'wb') as f: f.write(blob)
    return path


def _fake_fashion_mnist(folder, n_train=5, n_test=3, labels=None):
    "Four synthetic Fashion-MNIST files in `folder`."
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (('train', n_train), ('test', n_test)):
        img_f, lbl_f = data.FASHION_MNIST_FILES[split]
        _idx(folder / img_f, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _idx(folder / lbl_f, np.arange(n, dtype=np.uint8) % 10 if labels is None else labels[split])
    return folder


# --- IDX -----------------------------------------------------------------------------------------------------------

def test_read_idx_roundtrip_and_header_checks(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(_idx(tmp_path / 'a.gz', arr), ndim=3), arr)
    with pytest.raises(ValueError, match='says 3-D data; expected 1-D'):
        read_idx(tmp_path / 'a.gz', ndim=1)
    with pytest.raises(ValueError, match='magic number 0x00000d03 is not an IDX file of unsigned bytes'):
        read_idx(_idx(tmp_path / 'float.gz', arr, magic_type=0x0D))
    with pytest.raises(ValueError, match=r'header says shape \(2, 3, 5\) \(30 bytes\) but the file holds 24'):
        read_idx(_idx(tmp_path / 'short.gz', arr, dims=(2, 3, 5)))
    with pytest.raises(ValueError, match='holds 24 data bytes'):
        read_idx(_idx(tmp_path / 'extra.gz', arr, dims=(2, 3, 2)))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        read_idx(tmp_path / 'missing.gz')
    (tmp_path / 'notgz.gz').write_bytes(b'\x00\x00\x08\x01\x00\x00\x00\x01\x05')
    with pytest.raises(ValueError, match='cannot decompress'):
        read_idx(tmp_path / 'notgz.gz')
    (tmp_path / 'raw.idx').write_bytes(b'\x00\x00\x08\x01\x00\x00\x00\x02\x05\x07')   # uncompressed is fine too
    assert read_idx(tmp_path / 'raw.idx').tolist() == [5, 7]


# --- Fashion-MNIST -------------------------------------------------------------------------------------------------

def test_fashion_mnist_shapes_counts_labels():
    x, y = load_fashion_mnist('train')
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert torch.bincount(y).tolist() == [6000] * 10
    xt, yt = load_fashion_mnist('test')
    assert xt.shape == (10000, 1, 28, 28) and torch.bincount(yt).tolist() == [1000] * 10
    xa, ya = load_fashion_mnist('all')
    assert xa.shape == (70000, 1, 28, 28) and torch.equal(xa[60000:], xt) and torch.equal(ya[:60000], y)
    assert 60 < x.float().mean() < 90                       # real images, not zeros (mean ~72.9)


def test_fashion_mnist_cache_returns_fresh_tensors():
    x, _ = load_fashion_mnist('test')
    ref = x[0].clone()
    x.zero_()                                               # a careless caller
    assert torch.equal(load_fashion_mnist('test')[0][0], ref)


def test_fashion_mnist_from_a_custom_folder(tmp_path):
    d = _fake_fashion_mnist(tmp_path / 'fm')
    x, y = load_fashion_mnist('train', data_dir=d)
    assert x.shape == (5, 1, 28, 28) and y.tolist() == [0, 1, 2, 3, 4]
    assert load_fashion_mnist('all', data_dir=d)[0].shape == (8, 1, 28, 28)
    # a replaced file is re-read (the cache is keyed on size and mtime)
    _idx(d / 'train-labels-idx1-ubyte.gz', np.array([9, 9, 9, 9, 9], np.uint8))
    assert load_fashion_mnist('train', data_dir=d)[1].tolist() == [9] * 5


def test_fashion_mnist_content_checks(tmp_path):
    bad_labels = _fake_fashion_mnist(tmp_path / 'lbl', labels={'train': np.array([0, 1, 2, 3, 10], np.uint8),
                                                                'test': np.zeros(3, np.uint8)})
    with pytest.raises(ValueError, match='label 10 is out of range'):
        load_fashion_mnist('train', data_dir=bad_labels)
    short = _fake_fashion_mnist(tmp_path / 'cnt', labels={'train': np.zeros(4, np.uint8), 'test': np.zeros(3, np.uint8)})
    with pytest.raises(ValueError, match='4 labels for 5 images'):
        load_fashion_mnist('train', data_dir=short)
    size = _fake_fashion_mnist(tmp_path / 'size')
    _idx(size / 'train-images-idx3-ubyte.gz', np.zeros((5, 32, 32), np.uint8))
    with pytest.raises(ValueError, match='images are 32x32'):
        load_fashion_mnist('train', data_dir=size)


def test_missing_data_dir_message(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        ensure_fashion_mnist(tmp_path, install=False)
    msg = str(e.value)
    for part in (str(tmp_path), 'train-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz', 'install=False',
                 'apt-get install -y dataset-fashion-mnist', 'data_dir=', "dataset='folder'"):
        assert part in msg, part
    with pytest.raises(FileNotFoundError, match='is not the package location'):   # install=True cannot fill a custom dir
        ensure_fashion_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match='apt-get install'):
        load_dataset(DataConfig(data_dir=str(tmp_path)))


def test_install_path_runs_apt_and_rechecks(tmp_path, monkeypatch, capsys):
    "The apt branch, without touching the system: apt-get is faked (it 'installs' by writing the files)."
    target = tmp_path / 'pkg'
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        if cmd[:2] == ['apt-get', 'install']: _fake_fashion_mnist(target)
        return type('R', (), {'returncode': 0, 'stdout': '', 'stderr': ''})()

    monkeypatch.setattr(data, 'FASHION_MNIST_DIR', target)
    monkeypatch.setattr(data.os, 'geteuid', lambda: 0)
    monkeypatch.setattr(data.shutil, 'which', lambda name: '/usr/bin/' + name)
    monkeypatch.setattr(data.subprocess, 'run', fake_run)
    assert ensure_fashion_mnist() == target
    assert calls == [['apt-get', 'update'], ['apt-get', 'install', '-y', 'dataset-fashion-mnist']]
    assert '$ apt-get install -y dataset-fashion-mnist' in capsys.readouterr().out

    failing = tmp_path / 'pkg2'
    monkeypatch.setattr(data, 'FASHION_MNIST_DIR', failing)
    monkeypatch.setattr(data.subprocess, 'run',
                        lambda cmd, **kw: type('R', (), {'returncode': 100, 'stdout': '', 'stderr': 'E: Unable to locate package'})())
    with pytest.raises(FileNotFoundError, match='exited with 100: E: Unable to locate package'):
        ensure_fashion_mnist()
    monkeypatch.setattr(data.os, 'geteuid', lambda: 1000)
    with pytest.raises(FileNotFoundError, match='not running as root'):
        ensure_fashion_mnist()


# --- user image folders: errors ------------------------------------------------------------------------------------

def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"'{tmp_path / 'nope'}' does not exist"):
        load_image_folder(tmp_path / 'nope', image_size=8)


def test_not_a_directory(tmp_path):
    f = _img(tmp_path / 'a.png')
    with pytest.raises(NotADirectoryError, match='is a file, not a directory'):
        load_image_folder(f, image_size=8)


def test_empty_folder(tmp_path):
    (tmp_path / 'notes.txt').write_text('no images here')
    (tmp_path / 'sub').mkdir()
    _img(tmp_path / '.cache' / 'hidden.png')                 # hidden folders do not count
    with pytest.raises(ValueError, match='contains no images'):
        load_image_folder(tmp_path, image_size=8)


def test_corrupt_and_truncated_images_are_named(tmp_path):
    _img(tmp_path / 'good.png')
    (tmp_path / 'broken.jpg').write_bytes(b'\xff\xd8\xff not really a jpeg')
    with pytest.raises(ValueError, match='cannot read image .*broken.jpg'):
        load_image_folder(tmp_path, image_size=8)
    (tmp_path / 'broken.jpg').unlink()
    full = _img(tmp_path / 'cut.jpg', size=(64, 64)).read_bytes()
    (tmp_path / 'cut.jpg').write_bytes(full[:len(full) // 2])
    with pytest.raises(ValueError, match='cut.jpg'):
        load_image_folder(tmp_path, image_size=8)


def test_unconvertible_mode_fails_clearly(tmp_path):
    "A 32-bit float image (a TIFF, here with a .png name: PIL goes by content) has no 0..255 range."
    Image.new('F', (10, 10), 0.5).save(tmp_path / 'depth.png', format='TIFF')
    with pytest.raises(ValueError, match=r"depth.png: image mode 'F' \(32-bit float\) has no defined 0..255 range"):
        load_image_folder(tmp_path, image_size=8)


def test_bad_arguments(tmp_path):
    _img(tmp_path / 'a.png')
    with pytest.raises(ValueError, match='channels=4 is not allowed'):
        load_image_folder(tmp_path, image_size=8, channels=4)
    with pytest.raises(ValueError, match='image_size=0 is out of range'):
        load_image_folder(tmp_path, image_size=0)
    with pytest.raises(ValueError, match='max_images=0 is out of range'):
        load_image_folder(tmp_path, image_size=8, max_images=0)
    with pytest.raises(ValueError, match="split='val' is not allowed"):
        load_dataset(DataConfig(dataset='folder', data_dir=str(tmp_path)), 'val')
    with pytest.raises(ValueError, match='cfg must be a DataConfig'):
        load_dataset({'dataset': 'folder'})


# --- user image folders: modes and channels ------------------------------------------------------------------------

def test_channel_conversions(tmp_path):
    Image.new('RGBA', (8, 8), (10, 20, 30, 0)).save(tmp_path / 'a_rgba.png')            # alpha dropped
    Image.new('LA', (8, 8), (77, 0)).save(tmp_path / 'b_la.png')                        # grey + alpha
    pal = Image.new('P', (8, 8), 1); pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.save(tmp_path / 'c_pal.png', transparency=0)                                    # palette + transparency
    Image.new('CMYK', (8, 8), (0, 255, 255, 0)).save(tmp_path / 'd_cmyk.jpg')          # CMYK JPEG (red)
    Image.new('1', (8, 8), 1).save(tmp_path / 'e_bit.bmp')                              # 1-bit
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / 'f_16bit.png')   # 16-bit grey: white
    Image.fromarray(np.full((8, 8), 32896, np.uint16)).save(tmp_path / 'g_16bit.png')   # 16-bit mid grey
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                                  # no PIL palette warning
        x, _ = load_image_folder(tmp_path, image_size=8, channels=3)
    assert x.shape == (7, 3, 8, 8)
    px = [x[i, :, 4, 4].tolist() for i in range(7)]
    assert px[0] == [10, 20, 30] and px[1] == [77, 77, 77] and px[2] == [200, 100, 50]
    assert px[3][0] > 200 and px[3][1] < 60 and px[3][2] < 60
    assert px[4] == [255] * 3 and px[5] == [255] * 3 and px[6] == [128] * 3
    g, _ = load_image_folder(tmp_path, image_size=8, channels=1)
    assert g.shape == (7, 1, 8, 8)
    r, gr, b = 10, 20, 30
    assert abs(g[0, 0, 4, 4].item() - (0.299 * r + 0.587 * gr + 0.114 * b)) <= 1   # luma
    assert g[1, 0, 4, 4].item() == 77 and g[6, 0, 4, 4].item() == 128


def test_grey_images_replicate_to_rgb(tmp_path):
    a = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(a).save(tmp_path / 'g.png')
    x, _ = load_image_folder(tmp_path, image_size=8, channels=3)
    assert torch.equal(x[0, 0], x[0, 1]) and torch.equal(x[0, 0], x[0, 2])
    assert torch.equal(x[0, 0], torch.from_numpy(a))                # same size: untouched


# --- user image folders: layouts and geometry ----------------------------------------------------------------------

def test_flat_and_class_layouts(tmp_path):
    for i in range(3): _img(tmp_path / 'flat' / f'{i}.png', mode='L', value=10 * i)
    _img(tmp_path / 'flat' / 'UPPER.JPG')                             # extensions are case-insensitive
    _img(tmp_path / 'flat' / '.ipynb_checkpoints' / 'x.png')          # hidden: skipped
    (tmp_path / 'flat' / '._0.png').write_bytes(b'AppleDouble junk')  # hidden: skipped
    x, y = load_image_folder(tmp_path / 'flat', image_size=8, channels=1)
    assert x.shape == (4, 1, 8, 8) and x.dtype == torch.uint8 and y.tolist() == [0, 0, 0, 0]
    assert [x[i].float().mean().item() for i in range(3)] == [0.0, 10.0, 20.0]
    for cls, n in (('dogs', 3), ('cats', 2)):
        for i in range(n): _img(tmp_path / 'cls' / cls / f'{i}.jpg')
    _img(tmp_path / 'cls' / 'dogs' / 'deeper' / 'more' / 'x.webp')    # nested: belongs to 'dogs'
    x, y = load_image_folder(tmp_path / 'cls', image_size=8, channels=3)
    assert x.shape == (6, 3, 8, 8) and y.tolist() == [0, 0, 1, 1, 1, 1]   # cats=0, dogs=1 (sorted names)
    files, labels, classes = list_images(tmp_path / 'cls')
    assert classes == ['cats', 'dogs'] and files[-1].name == 'x.webp'


def test_mixed_layout_and_max_images(tmp_path):
    _img(tmp_path / 'z_loose.png'); _img(tmp_path / 'a' / '1.png'); _img(tmp_path / 'b' / '2.png')
    files, labels, classes = list_images(tmp_path)
    assert classes == ['.', 'a', 'b'] and labels == [1, 2, 0]
    x, y = load_image_folder(tmp_path, image_size=8, max_images=2)
    assert x.shape[0] == 2 and y.tolist() == [1, 2]                    # the first N in sorted path order


def test_symlinked_folders_are_followed_once(tmp_path):
    _img(tmp_path / 'real' / 'a.png')
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'link').symlink_to(tmp_path / 'real', target_is_directory=True)
    (tmp_path / 'real' / 'loop').symlink_to(tmp_path / 'real', target_is_directory=True)   # a cycle
    files, _, _ = list_images(tmp_path / 'data')
    assert [f.name for f in files] == ['a.png']


def test_centre_crop_geometry(tmp_path):
    "Wide 40x20: black | white | black stripes -> box-halved to 20x10 -> centre 10x10 is exactly the white stripe."
    a = np.zeros((20, 40), dtype=np.uint8); a[:, 10:30] = 255
    Image.fromarray(a).save(tmp_path / 'wide.png')
    x, _ = load_image_folder(tmp_path, image_size=10, channels=1)
    assert torch.equal(x[0, 0], torch.full((10, 10), 255, dtype=torch.uint8))


def test_centre_crop_offset_tall_image(tmp_path):
    "Tall 10x13 at size 10: no resize, crop rows (13-10)//2 = 1 .. 10 (ADM's floor offset)."
    a = (np.arange(13, dtype=np.uint8)[:, None] * 10).repeat(10, axis=1)
    Image.fromarray(a).save(tmp_path / 'tall.png')
    x, _ = load_image_folder(tmp_path, image_size=10, channels=1)
    assert x[0, 0, :, 0].tolist() == list(range(10, 110, 10))


def test_downscale_keeps_brightness_and_aspect(tmp_path):
    "A 256x128 image, left half dark and right half bright, at 32: shorter side 128->32, crop the centre 32 columns."
    a = np.zeros((128, 256, 3), dtype=np.uint8); a[:, 128:] = 200
    Image.fromarray(a).save(tmp_path / 'half.png')
    x, _ = load_image_folder(tmp_path, image_size=32)
    assert x.shape == (1, 3, 32, 32)
    assert x[0, :, :, :14].max() == 0 and x[0, :, :, 18:].min() == 200   # the boundary sits in the middle


def test_small_images_warn(tmp_path):
    _img(tmp_path / 'tiny.png', size=(4, 6))
    _img(tmp_path / 'big.png', size=(16, 16))
    with pytest.warns(UserWarning, match=r'1 of 2 images .* smaller than image_size=8 and were upsampled \(e.g. .*tiny.png'):
        x, _ = load_image_folder(tmp_path, image_size=8)
    assert x.shape == (2, 3, 8, 8) and (x == 128).all()


# --- load_dataset --------------------------------------------------------------------------------------------------

def test_folder_dataset_flat_has_no_heldout_split(tmp_path):
    for i in range(4): _img(tmp_path / f'{i}.png', value=40 * i)
    cfg = DataConfig(dataset='folder', data_dir=str(tmp_path), image_size=8, channels=3, max_images=3)
    xtr, _ = load_dataset(cfg, 'train'); xte, _ = load_dataset(cfg, 'test')
    assert xtr.shape == (3, 3, 8, 8) and xte.shape == (4, 3, 8, 8)       # max_images limits training only
    assert torch.equal(xte[:3], xtr)


def test_folder_dataset_split_layout(tmp_path):
    for i in range(3): _img(tmp_path / 'train' / 'cat' / f'{i}.png')
    _img(tmp_path / 'train' / 'dog' / 'd.png')
    _img(tmp_path / 'test' / 'dog' / 'x.png')                           # test has no 'cat': labels must still agree
    cfg = DataConfig(dataset='folder', data_dir=str(tmp_path), image_size=8, channels=1)
    x, y = load_dataset(cfg, 'train')
    assert x.shape == (4, 1, 8, 8) and y.tolist() == [0, 0, 0, 1]
    assert load_dataset(cfg, 'test')[1].tolist() == [1]
    assert load_dataset(cfg, 'all')[1].tolist() == [0, 0, 0, 1, 1]
    assert load_dataset(cfg.replace(max_images=2), 'train')[0].shape[0] == 2


def test_fashion_mnist_dataset_config():
    x, y = load_dataset(DataConfig(image_size=16, channels=3, max_images=50))
    assert x.shape == (50, 3, 16, 16) and x.dtype == torch.uint8 and y.shape == (50,)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    assert torch.equal(x[:, :1], resize_images(load_fashion_mnist('train')[0][:50], 16))
    assert load_dataset(DataConfig(max_images=50), 'test')[0].shape == (10000, 1, 28, 28)


# --- transforms, order, grids --------------------------------------------------------------------------------------

def test_resize_images():
    x = torch.randint(0, 256, (5, 3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for s in (16, 32, 28):
        r = resize_images(x, s)
        assert r.shape == (5, 3, s, s) and r.dtype == torch.uint8
    # a 1-pixel checkerboard resized antialiased is flat grey (+-3 at the border); plain bilinear 28 -> 16 would alias
    # it into a pattern (measured: up to 72 grey levels off inside)
    board = ((torch.arange(28)[:, None] + torch.arange(28)) % 2 * 255).to(torch.uint8).expand(1, 1, 28, 28)
    assert (resize_images(board, 14).float() - 127.5).abs().max() <= 3
    assert (resize_images(board, 16).float() - 127.5).abs()[..., 2:-2, 2:-2].max() <= 3
    with pytest.raises(ValueError, match='x must be uint8'):
        resize_images(x.float(), 16)
    with pytest.raises(ValueError, match='size=0 is out of range'):
        resize_images(x, 0)


def test_ranges():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    m = to_model_range(x)
    assert m.dtype == torch.float32 and m.min() == -1 and m.max() == 1
    assert torch.allclose(to_unit_range(m), x.float() / 255, atol=1e-6)
    assert to_unit_range(torch.tensor([-2.0, 2.0])).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match='x must be uint8'):
        to_model_range(m)


def test_data_order_is_a_function_of_the_step():
    n, b = 103, 10                                            # 10 steps per epoch, 3 images dropped per epoch
    a = DataOrder(n, b, seed=7)
    run = [a.indices(s) for s in range(35)]
    for s in (0, 9, 10, 34, 21):                              # fresh instances, any order of calls
        assert torch.equal(DataOrder(n, b, seed=7).indices(s), run[s])
    assert torch.equal(a.indices(3), run[3])                  # going back to an earlier epoch
    for e in range(3):
        ep = torch.cat(run[10 * e:10 * e + 10])
        assert len(ep) == 100 and len(set(ep.tolist())) == 100 and ep.min() >= 0 and ep.max() < n
        assert torch.equal(a.permutation(e).sort().values, torch.arange(n))
    assert not torch.equal(torch.cat(run[:10]), torch.cat(run[10:20]))
    assert not torch.equal(DataOrder(n, b, seed=8).indices(0), run[0])
    run[0][:] = -1                                            # returned indices are copies
    assert DataOrder(n, b, seed=7).indices(0).min() >= 0 and a.indices(0).min() >= 0
    assert a.epoch(29) == 2 and a.steps_per_epoch == 10


def test_data_order_validation():
    with pytest.raises(ValueError, match='batch_size=11 is larger than the dataset: n=10'):
        DataOrder(10, 11, seed=0)
    with pytest.raises(ValueError, match='batch_size=0 is out of range'):
        DataOrder(10, 0, seed=0)
    with pytest.raises(ValueError, match='seed=-1 is out of range'):
        DataOrder(10, 2, seed=-1)
    with pytest.raises(ValueError, match='step=-1 is out of range'):
        DataOrder(10, 2, seed=0).indices(-1)


def test_image_grid_and_png(tmp_path):
    x = torch.zeros(5, 1, 4, 6, dtype=torch.uint8)
    g = image_grid(x, nrow=3, pad=1)
    assert g.shape == (1, 2 * 5 + 1, 3 * 7 + 1)
    assert g[0, 0].eq(1).all() and g[0, 1:5, 1:7].eq(0).all() and g[0, 6:10, 15:21].eq(1).all()  # empty slot is white
    rgb = image_grid(torch.ones(2, 3, 4, 4) * 2, nrow=2, pad=0)          # overshooting samples are clamped
    assert rgb.shape == (3, 4, 8) and rgb.max() == 1
    p = save_image_grid(x, tmp_path / 'out' / 'g.png', nrow=3, scale=2)
    im = Image.open(p)
    assert im.format == 'PNG' and im.size == (2 * 22, 2 * 11)
    with pytest.raises(ValueError, match='non-empty batch'):
        image_grid(torch.zeros(2, 2, 4, 4))
