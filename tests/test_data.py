"""User image folders: every way they can be wrong fails clearly before training; valid layouts load right."""
import numpy as np
import pytest
import torch
from PIL import Image

from sdr.core import DataConfig
from sdr.data import load_dataset, load_image_folder, load_fashion_mnist, ensure_fashion_mnist


def _img(path, size=(20, 12), mode='RGB', value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode in ('L', 'P') else (value,) * len(mode)).save(path)
    return path


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_image_folder(tmp_path / 'nope', image_size=8)


def test_not_a_directory(tmp_path):
    f = _img(tmp_path / 'a.png')
    with pytest.raises(NotADirectoryError, match='is not a directory'):
        load_image_folder(f, image_size=8)


def test_empty_folder(tmp_path):
    (tmp_path / 'notes.txt').write_text('no images here')
    with pytest.raises(ValueError, match='contains no images'):
        load_image_folder(tmp_path, image_size=8)


def test_corrupt_image_is_named(tmp_path):
    _img(tmp_path / 'good.png')
    (tmp_path / 'broken.jpg').write_bytes(b'\xff\xd8\xff not really a jpeg')
    with pytest.raises(ValueError, match='broken.jpg'):
        load_image_folder(tmp_path, image_size=8)


def test_alpha_and_grey_modes_convert(tmp_path):
    im = Image.fromarray(np.zeros((10, 10, 2), dtype=np.uint8), mode='LA')  # converts fine (alpha dropped)
    im.save(tmp_path / 'la.png')
    x, _ = load_image_folder(tmp_path, image_size=8, channels=3)
    assert x.shape == (1, 3, 8, 8)


def test_channels_must_be_1_or_3(tmp_path):
    _img(tmp_path / 'a.png')
    with pytest.raises(ValueError, match='channels=4 is not allowed'):
        load_image_folder(tmp_path, image_size=8, channels=4)


def test_flat_and_class_layouts(tmp_path):
    for i in range(3): _img(tmp_path / 'flat' / f'{i}.png', mode='L', value=10 * i)
    x, y = load_image_folder(tmp_path / 'flat', image_size=8, channels=1)
    assert x.shape == (3, 1, 8, 8) and x.dtype == torch.uint8 and y.tolist() == [0, 0, 0]
    for cls, n in (('cats', 2), ('dogs', 3)):
        for i in range(n): _img(tmp_path / 'cls' / cls / f'{i}.jpg')
    x, y = load_image_folder(tmp_path / 'cls', image_size=8, channels=3)
    assert x.shape == (5, 3, 8, 8) and sorted(y.tolist()) == [0, 0, 1, 1, 1]


def test_centre_crop_geometry(tmp_path):
    "A 30x10 image: left third black, middle third white, right third black -> the centre crop is all white."
    a = np.zeros((10, 30), dtype=np.uint8); a[:, 10:20] = 255
    Image.fromarray(a).save(tmp_path / 'stripe.png')
    x, _ = load_image_folder(tmp_path, image_size=10, channels=1)
    assert x.shape == (1, 1, 10, 10)
    assert x[0, 0, :, 2:8].min() >= 250                  # centre is the white stripe
    assert x[0, 0, :, 0].float().mean() > 100            # not cropped from the left edge (that column is black)


def test_small_images_warn(tmp_path):
    _img(tmp_path / 'tiny.png', size=(4, 4))
    with pytest.warns(UserWarning, match='upsampled'):
        x, _ = load_image_folder(tmp_path, image_size=8)
    assert x.shape == (1, 3, 8, 8)


def test_folder_dataset_config(tmp_path):
    for i in range(4): _img(tmp_path / 'train' / f'{i}.png')
    _img(tmp_path / 'test' / 'x.png')
    cfg = DataConfig(dataset='folder', data_dir=str(tmp_path), image_size=8, channels=3)
    assert load_dataset(cfg, 'train')[0].shape == (4, 3, 8, 8)
    assert load_dataset(cfg, 'test')[0].shape == (1, 3, 8, 8)


def test_fashion_mnist_counts_and_missing_dir(tmp_path):
    x, y = load_fashion_mnist('all')
    assert x.shape == (70000, 1, 28, 28) and y.min() == 0 and y.max() == 9
    with pytest.raises(FileNotFoundError, match='dataset-fashion-mnist'):
        ensure_fashion_mnist(tmp_path, install=False)
