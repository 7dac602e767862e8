"""Data: IDX reader on files the test writes, TFDS loading under tfds.testing.mock_data, the offline error,
selection, shift, scaling and deterministic batches."""

import time

import numpy as np
import pytest

from bnexp.errors import DataUnavailable, UserError
from bnexp.toolkit import data


def _write_idx_dir(folder, n_train=20, n_test=10, gz=True):
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28), np.uint8),
              "y_train": rng.integers(0, 10, n_train).astype(np.uint8),
              "x_test": rng.integers(0, 256, (n_test, 28, 28), np.uint8),
              "y_test": rng.integers(0, 10, n_test).astype(np.uint8)}
    for key, stem in data.IDX_FILES.items():
        data.write_idx(folder / f"{stem}{ext}", arrays[key])
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    arrays = _write_idx_dir(tmp_path, gz=gz)
    got = data.read_idx_dir(tmp_path)
    assert got.x_train.shape == (20, 28, 28, 1) and got.x_train.dtype == np.uint8
    np.testing.assert_array_equal(got.x_train[..., 0], arrays["x_train"])
    np.testing.assert_array_equal(got.y_test, arrays["y_test"])


def test_truncated_idx_names_the_file(tmp_path):
    _write_idx_dir(tmp_path, gz=False)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte is truncated"):
        data.read_idx_dir(tmp_path)


def test_corrupt_idx_magic_and_bad_gzip_name_the_file(tmp_path):
    _write_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz"):
        data.read_idx_dir(tmp_path)
    plain = tmp_path / "plain"
    plain.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 20)
    with pytest.raises(UserError, match="bad magic number"):
        data.read_idx(plain)


def test_fashion_mnist_from_idx_folder_then_from_cache(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    _write_idx_dir(raw)
    cache = tmp_path / "cache"
    a = data.load("fashion_mnist", raw_dir=str(raw), tfds_data_dir=str(tmp_path / "tfds"), cache_dir=cache)
    assert (cache / "data" / "fashion_mnist.npz").exists()
    monkeypatch.setattr(data, "_load_uncached", lambda *a, **k: pytest.fail("cache not used"))
    b = data.load("fashion_mnist", raw_dir=str(raw), cache_dir=cache)
    np.testing.assert_array_equal(a.x_train, b.x_train)


def test_missing_dataset_offline_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "reachable", lambda host, timeout_s: False)
    start = time.perf_counter()
    with pytest.raises(DataUnavailable, match=r"'mnist' is not prepared.*not reachable.*download_and_prepare"):
        data.load("mnist", tfds_data_dir=str(tmp_path / "tfds"))
    with pytest.raises(DataUnavailable, match="dataset-fashion-mnist"):
        data.load("fashion_mnist", raw_dir=str(tmp_path / "nowhere"), tfds_data_dir=str(tmp_path / "tfds"))
    assert time.perf_counter() - start < 10


def test_reachability_check_is_bounded():
    start = time.perf_counter()
    data.reachable("10.255.255.1", 0.5)  # non-routable: must give up within the timeout
    assert time.perf_counter() - start < 3


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_loading_under_mock_data(tmp_path, monkeypatch, name, shape):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(data, "reachable", lambda host, timeout_s: True)  # the "download" is mocked below
    with tfds.testing.mock_data(num_examples=12):
        arrays = data.load(name, tfds_data_dir=str(tmp_path / "tfds"), cache_dir=tmp_path / "cache")
    assert arrays.x_train.shape == (12, *shape) and arrays.x_test.shape[1:] == shape
    assert arrays.x_train.dtype == np.uint8 and arrays.y_train.dtype == np.int64
    assert (tmp_path / "cache" / "data" / f"{name}.npz").exists()


def test_select_relabels_classes_in_given_order_and_limits_deterministically():
    x = np.arange(10)[:, None]
    y = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    xs, ys = data.select(x, y, classes=[7, 5])
    np.testing.assert_array_equal(xs[:, 0], [5, 7])
    np.testing.assert_array_equal(ys, [1, 0])
    a, _ = data.select(x, y, limit=4, seed=3)
    b, _ = data.select(x, y, limit=4, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 4


def test_scalings_and_shifts():
    x = np.array([[[[0], [255]], [[51], [102]]]], np.uint8)
    np.testing.assert_allclose(data.scale(x, "unit").max(), 1.0)
    np.testing.assert_allclose(data.scale(x, "raw").max(), 255.0)
    std = data.scale(x, "standard", data.scaling_stats(x))
    np.testing.assert_allclose([std.mean(), std.std()], [0, 1], atol=1e-5)
    np.testing.assert_array_equal(data.shift(x, "invert"), 255 - x)
    assert data.shift(x, "contrast").std() < x.std()
    with pytest.raises(UserError, match="unknown shift"):
        data.shift(x, "blur")


def test_train_batches_are_exact_in_count_and_deterministic():
    x = np.arange(100, dtype=np.float32)[:, None]
    y = np.arange(100)
    first = [b[0].numpy().ravel().tolist() for b in data.train_batches(x, y, 16, 9, seed=5)]
    again = [b[0].numpy().ravel().tolist() for b in data.train_batches(x, y, 16, 9, seed=5)]
    other = [b[0].numpy().ravel().tolist() for b in data.train_batches(x, y, 16, 9, seed=6)]
    assert len(first) == 9 and all(len(b) == 16 for b in first)
    assert first == again and first != other
    assert sorted(sum(first[:6], [])) == sorted(set(sum(first[:6], [])))  # one epoch: no repeats
    # the one batch order: the TF1 session loop and the R1 passes index the arrays with it
    assert data.batch_order(100, 16, 9, seed=5).tolist() == first
    with pytest.raises(UserError, match="batch size 128 exceeds the 100 training samples"):
        data.batch_order(100, 128, 1, seed=5)


def test_train_batches_within_one_epoch_and_beyond_follow_the_batch_order():
    """At most one epoch of batches is copied out of x up front, more is gathered per batch from all of x: both
    give exactly batch_order's images and labels, with the same element shapes and dtypes."""
    x = np.arange(100 * 3, dtype=np.float32).reshape(100, 3)
    y = np.arange(100, dtype=np.int64) % 7
    for steps in (6, 20):  # 6 x 16 = 96 <= 100 images; 20 x 16 = 320 > 100
        ds = data.train_batches(x, y, 16, steps, seed=2)
        order = data.batch_order(100, 16, steps, seed=2)
        got = list(ds)
        assert len(got) == steps and ds.element_spec[0].shape.as_list() == [16, 3]
        for (bx, by), idx in zip(got, order):
            assert bx.dtype.name == "float32" and by.dtype.name == "int64"
            np.testing.assert_array_equal(bx.numpy(), x[idx])
            np.testing.assert_array_equal(by.numpy(), y[idx])


def test_cached_dataset_is_read_once_shared_read_only_and_read_again_when_replaced(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    written = _write_idx_dir(raw)
    cache = tmp_path / "cache"
    first = data.load("fashion_mnist", raw_dir=str(raw), cache_dir=cache)  # decodes the IDX files, writes the .npz
    real_np_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("the .npz was read again"))
    second = data.load("fashion_mnist", raw_dir=str(raw), cache_dir=cache)
    third = data.load("fashion_mnist", raw_dir=str(raw), cache_dir=cache)
    for key in data.IDX_FILES:
        a, b = getattr(first, key), getattr(second, key)
        np.testing.assert_array_equal(a, b)
        assert b.dtype == a.dtype and not b.flags.writeable
    np.testing.assert_array_equal(second.x_train[..., 0], written["x_train"])
    # a run cannot change what the next run loads: no writes, no flipping the flag back, no swapping fields
    with pytest.raises(ValueError, match="read-only"):
        second.x_train[0, 0, 0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        second.y_test += 1
    with pytest.raises(ValueError):
        second.x_test.setflags(write=True)
    second.y_train = np.zeros_like(second.y_train)
    np.testing.assert_array_equal(third.y_train, first.y_train)
    np.testing.assert_array_equal(data.load("fashion_mnist", raw_dir=str(raw), cache_dir=cache).y_train,
                                  first.y_train)
    # what a run works on is its own, writeable copy
    x, y = data.select(third.x_train, third.y_train, classes=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], limit=5, seed=0)
    assert x.flags.writeable and y.flags.writeable
    assert data.scale(third.x_train, "unit").flags.writeable
    # a cache file replaced on disk (rebuilt, another dataset version) is read again
    monkeypatch.setattr(np, "load", real_np_load)
    npz = cache / "data" / "fashion_mnist.npz"
    with np.load(npz) as z:
        changed = {k: z[k] for k in data.IDX_FILES}
    changed["y_train"] = (changed["y_train"] + 1) % 10
    np.savez(tmp_path / "new.npz", **changed)
    (tmp_path / "new.npz").replace(npz)
    np.testing.assert_array_equal(data.load("fashion_mnist", raw_dir=str(raw), cache_dir=cache).y_train,
                                  changed["y_train"])


def test_loads_without_a_cache_dir_are_read_only_too(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    _write_idx_dir(raw)
    arrays = data.load("fashion_mnist", raw_dir=str(raw), tfds_data_dir=str(tmp_path / "tfds"))
    assert not any(a.flags.writeable for a in arrays.__dict__.values())
