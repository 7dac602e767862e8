"""Datasets as NumPy arrays, then as deterministic tf.data pipelines.

Where the images come from, in order:
1. a prepared TFDS data dir (`data.tfds_data_dir`, else TFDS' default);
2. for fashion_mnist, the original IDX files in `data.raw_dir` (Debian's `dataset-fashion-mnist`; first,
   before TFDS, where Keras 3 runs on JAX or PyTorch, so that no TensorFlow starts there);
3. a TFDS download, only when the download host answers within a few seconds.
The arrays are then cached as one .npz under `paths.cache_dir`, so a warm load is a single read.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnexp.atomic import atomic_open
from bnexp.errors import DataUnavailable, UserError
from bnexp.names import CORRUPTIONS, DATASETS, SCALINGS, SEVERITIES, SHIFTS
from bnexp.network import reachable

# Hosts TFDS downloads these datasets from: asked once, briefly, instead of letting TFDS retry for minutes.
DOWNLOAD_HOSTS = {"fashion_mnist": "storage.googleapis.com", "mnist": "storage.googleapis.com",
                  "cifar10": "www.cs.toronto.edu"}
IDX_FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


@dataclass
class Arrays:
    """uint8 images (N, H, W, C) and int64 labels, as stored on disk."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


# ---------------------------------------------------------------- loading


# The .npz caches this process has read, by file and its stat signature: a warm worker (bnexp.toolkit.worker)
# reads and decodes its dataset once, not once per run. Few entries: a transfer scenario uses two datasets.
_MEMORY: dict[tuple, Arrays] = {}
MEMORY_ENTRIES = 2


def load(name: str, raw_dir: str | None = None, tfds_data_dir: str | None = None,
         cache_dir: str | os.PathLike | None = None, download_timeout_s: float = 3.0) -> Arrays:
    """The whole dataset as uint8 arrays; see the module docstring for where it comes from.

    The arrays are read-only (over immutable memory: they cannot be made writeable). With a cache_dir, a
    process reads the cache file once and every later load of that file, unchanged, shares its arrays (a
    warm worker's runs), so no run can change another's data. Take a copy to write into them (select with
    classes or a limit, shift, scale and corrupt return new arrays)."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)} (e.g. data=fashion_mnist)")
    cache = Path(cache_dir).expanduser() / "data" / f"{name}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        key = _memory_key(cache)
        if key in _MEMORY:
            return _read_only_views(_MEMORY[key])
        try:
            with np.load(cache) as z:
                arrays = Arrays(**{k: z[k] for k in IDX_FILES})
        except Exception:  # a damaged cache is rebuilt, never trusted
            cache.unlink(missing_ok=True)
        else:
            return _remember(key, arrays)
    arrays = _load_uncached(name, raw_dir, tfds_data_dir, download_timeout_s)
    if cache is None:
        return _read_only_views(_freeze(arrays))
    _save_npz(cache, arrays)
    return _remember(_memory_key(cache), arrays)


def _memory_key(cache: Path) -> tuple:
    """What decides the arrays read from `cache`: the file (resolved), and its identity and version on disk,
    so a cache rebuilt or replaced since is read again."""
    st = cache.stat()
    return str(cache.resolve()), st.st_ino, st.st_size, st.st_mtime_ns


def _remember(key: tuple, arrays: Arrays) -> Arrays:
    for old in [k for k in _MEMORY if k[0] == key[0]]:  # an older version of the same file
        del _MEMORY[old]
    _MEMORY[key] = _freeze(arrays)
    while len(_MEMORY) > MEMORY_ENTRIES:
        del _MEMORY[next(iter(_MEMORY))]  # the oldest
    return _read_only_views(_MEMORY[key])


def _freeze(arrays: Arrays) -> Arrays:
    """The same arrays over immutable memory (a bytes object): read-only, and NumPy refuses to make them
    or any view of them writeable again."""
    return Arrays(**{k: np.frombuffer(v.tobytes(), v.dtype).reshape(v.shape) for k, v in arrays.__dict__.items()})


def _read_only_views(arrays: Arrays) -> Arrays:
    """A new Arrays of views: replacing a field of the returned object leaves the remembered one alone."""
    return Arrays(**{k: v.view() for k, v in arrays.__dict__.items()})


def clear_memory() -> None:
    """Forget the datasets kept in memory (tests; a process that needs the memory back)."""
    _MEMORY.clear()


def _load_uncached(name, raw_dir, tfds_data_dir, download_timeout_s) -> Arrays:
    from bnexp.toolkit import framework

    if framework.BACKEND != "tensorflow" and name == "fashion_mnist" and raw_dir and Path(raw_dir).is_dir():
        return read_idx_dir(Path(raw_dir))  # Keras 3 on JAX/PyTorch: TFDS would start TensorFlow
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=tfds_data_dir)
    if builder.is_prepared():
        return _from_tfds(builder)
    if name == "fashion_mnist" and raw_dir and Path(raw_dir).is_dir():
        return read_idx_dir(Path(raw_dir))
    host = DOWNLOAD_HOSTS[name]
    if not reachable(host, download_timeout_s):
        hint = {
            "fashion_mnist": "install Debian's package `dataset-fashion-mnist` (make setup does) or point "
                             "data.raw_dir= at a folder with the four IDX files",
        }.get(name, f"prepare it once where the network is open (python -c \"import tensorflow_datasets as tfds; "
                    f"tfds.builder('{name}').download_and_prepare()\") and copy the TFDS data dir here "
                    f"(data.tfds_data_dir=...), or put the raw archives in TFDS' manual folder")
        raise DataUnavailable(
            f"dataset {name!r} is not prepared in the TFDS data dir ({builder.data_dir}) and {host} is not "
            f"reachable to download it: {hint}")
    builder.download_and_prepare()
    return _from_tfds(builder)


def _from_tfds(builder) -> Arrays:
    import tensorflow_datasets as tfds

    out = {}
    for split, (xk, yk) in {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}.items():
        ds = builder.as_dataset(split=split, as_supervised=True).batch(10_000)
        parts = list(tfds.as_numpy(ds))
        out[xk] = np.concatenate([p[0] for p in parts]).astype(np.uint8)
        out[yk] = np.concatenate([p[1] for p in parts]).astype(np.int64)
    return Arrays(**out)



def _save_npz(path: Path, arrays: Arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        np.savez(f, **arrays.__dict__)


# ---------------------------------------------------------------- IDX files


def read_idx_dir(folder: Path) -> Arrays:
    """The four original IDX files (plain or .gz) of an MNIST-format dataset."""
    out = {}
    for key, stem in IDX_FILES.items():
        candidates = [folder / f"{stem}.gz", folder / stem]
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            raise DataUnavailable(f"{folder} has no {stem}[.gz]; it needs the four original IDX files "
                                  f"({', '.join(IDX_FILES.values())})")
        out[key] = read_idx(path)
    x_tr, x_te = out["x_train"], out["x_test"]
    out["x_train"], out["x_test"] = x_tr[..., None], x_te[..., None]
    out["y_train"], out["y_test"] = out["y_train"].astype(np.int64), out["y_test"].astype(np.int64)
    if len(out["x_train"]) != len(out["y_train"]) or len(out["x_test"]) != len(out["y_test"]):
        raise UserError(f"IDX files in {folder} disagree: image and label counts differ")
    return Arrays(**out)


def read_idx(path: Path) -> np.ndarray:
    """One IDX file of unsigned bytes (magic 0x0000080N); a clear error if it is damaged."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read IDX file {path}: {e}; replace the file (e.g. reinstall "
                        f"dataset-fashion-mnist)") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise UserError(f"{path} is not an IDX file of unsigned bytes (bad magic number); replace the file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"IDX file {path} is truncated (header); replace the file")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise UserError(f"IDX file {path} is truncated or padded: {len(raw)} bytes, header says {expected}; "
                        f"replace the file")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write uint8 `array` as an IDX file (gzip if the name ends in .gz); used by tests and tools."""
    a = np.ascontiguousarray(array, np.uint8)
    raw = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


# ---------------------------------------------------------------- selection, shift, scaling


def select(x: np.ndarray, y: np.ndarray, classes=None, limit: int | None = None, seed: int = 0):
    """Keep `classes` (relabelled 0..k-1 in the given order), then at most `limit` samples drawn by `seed`."""
    if classes is not None:
        classes = [int(c) for c in classes]
        keep = np.isin(y, classes)
        lut = np.full(int(y.max()) + 1, -1, np.int64)
        lut[classes] = np.arange(len(classes))
        x, y = x[keep], lut[y[keep]]
    if limit is not None and limit < len(x):
        idx = np.sort(np.random.default_rng(seed).choice(len(x), int(limit), replace=False))
        x, y = x[idx], y[idx]
    return x, y


def shift(x: np.ndarray, kind: str) -> np.ndarray:
    """An input domain shift on uint8 images; each changes first-layer statistics differently."""
    if kind == "none":
        return x
    xf = x.astype(np.float32)
    if kind == "invert":
        out = 255.0 - xf
    elif kind == "contrast":  # halve the contrast around mid-grey
        out = 127.5 + 0.5 * (xf - 127.5)
    elif kind == "brightness":
        out = xf + 80.0
    else:
        raise UserError(f"unknown shift {kind!r}; valid: {', '.join(SHIFTS)}")
    return np.clip(out, 0, 255).astype(np.uint8)


# Per-severity parameters of `corrupt` (levels 1..5); noise/blur/contrast follow CIFAR-10-C (Hendrycks &
# Dietterich 2019, on images in [0, 1]), inversion is ours (no CIFAR-10-C counterpart).
CORRUPTION_LEVELS = {"noise": (0.04, 0.06, 0.08, 0.09, 0.10), "blur": (0.4, 0.6, 0.7, 0.8, 1.0),
                     "contrast": (0.75, 0.5, 0.4, 0.3, 0.15), "inversion": (0.6, 0.7, 0.8, 0.9, 1.0)}


def corrupt(x: np.ndarray, kind: str, severity: int, seed: int = 0) -> np.ndarray:
    """A corrupted copy of uint8 images (N, H, W, C) at `severity` 1..5; deterministic given `seed`
    (only noise draws random numbers)."""
    if kind not in CORRUPTIONS:
        raise UserError(f"unknown corruption {kind!r}; valid: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise UserError(f"unknown severity {severity!r}; valid: {', '.join(map(str, SEVERITIES))}")
    level = CORRUPTION_LEVELS[kind][severity - 1]
    xf = x.astype(np.float32) / 255.0
    if kind == "noise":
        out = xf + np.random.default_rng(seed).normal(0.0, level, xf.shape).astype(np.float32)
    elif kind == "blur":
        from scipy.ndimage import gaussian_filter

        out = gaussian_filter(xf, sigma=(0, level, level, 0))  # spatial axes only
    elif kind == "contrast":
        mean = xf.mean(axis=(1, 2, 3), keepdims=True)
        out = (xf - mean) * level + mean
    else:  # inversion
        out = level * (1.0 - xf) + (1.0 - level) * xf
    return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


def scaling_stats(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 training images, for `standard` scaling."""
    xf = x_train.reshape(-1, x_train.shape[-1]).astype(np.float64)
    return xf.mean(0).astype(np.float32), np.maximum(xf.std(0), 1e-6).astype(np.float32)


def scale(x: np.ndarray, scaling: str, stats=None) -> np.ndarray:
    """uint8 images -> float32: `unit` [0, 1], `standard` per-channel z-score (needs stats), `raw` 0..255."""
    xf = x.astype(np.float32)  # in place below: the same float32 operations, no second copy of the images
    if scaling == "unit":
        xf /= 255.0
        return xf
    if scaling == "raw":
        return xf
    if scaling == "standard":
        mean, std = stats
        xf -= mean
        xf /= std
        return xf
    raise UserError(f"unknown data.scaling {scaling!r}; valid: {', '.join(SCALINGS)}")


# ---------------------------------------------------------------- tf.data


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """(steps, batch_size) sample indices: every epoch a fresh permutation by `seed`, cut into whole
    batches (the remainder is left out). The one batch order of every training loop and R1 pass."""
    rng = np.random.default_rng(seed)
    per_epoch = n // batch_size
    if per_epoch < 1:
        raise UserError(f"batch size {batch_size} exceeds the {n} training samples (raise data.train_size "
                        f"or lower the batch size)")
    epochs = -(-steps // per_epoch)
    order = np.concatenate([rng.permutation(n)[: per_epoch * batch_size] for _ in range(epochs)])
    return order[: steps * batch_size].reshape(steps, batch_size)


def train_batches(x: np.ndarray, y: np.ndarray, batch_size: int, steps: int, seed: int):
    """Exactly `steps` batches in `batch_order`, as a prefetched tf.data pipeline of (images, labels); on
    Keras 3's JAX or PyTorch backend a generator of NumPy batches in the same order (no TensorFlow)."""
    from bnexp.toolkit import framework

    order = batch_order(len(x), batch_size, steps, seed)
    if framework.BACKEND != "tensorflow":
        return ((x[i], y[i]) for i in order)
    import tensorflow as tf

    if order.size <= len(x):  # at most one epoch (precise BN, probes): copy only the images used, not all of x
        return tf.data.Dataset.from_tensor_slices((x[order], y[order])).prefetch(tf.data.AUTOTUNE)
    xs, ys = tf.constant(x), tf.constant(y)  # a copy of all of x (0.1-1 s for 60,000 images), gathered per batch
    ds = tf.data.Dataset.from_tensor_slices(order).map(lambda i: (tf.gather(xs, i), tf.gather(ys, i)))
    return ds.prefetch(tf.data.AUTOTUNE)


@dataclass
class Prepared:
    """Scaled float32 images and labels, ready for a model."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def from_config(data_cfg, cache_dir, seed: int = 0, classes=None, shift_kind: str | None = None,
                name: str | None = None) -> Prepared:
    """Load, select classes and sizes, shift and scale as the `data` config group says.

    `classes` and `shift_kind` override `data.classes` and `data.shift`, and `name` the dataset (with
    the same sizes and scaling; data.raw_dir belongs to the configured dataset, so not to another one):
    transfer scenarios use a source and a target view. Standard-scaling statistics come from the
    selected training images, so a shifted domain is standardized with its own statistics only if
    the scenario asks for it by loading it as its own view.
    """
    other = name is not None and name != data_cfg.name
    arrays = load(name if other else data_cfg.name, None if other else data_cfg.get("raw_dir"),
                  data_cfg.get("tfds_data_dir"), cache_dir)
    classes = data_cfg.get("classes") if classes is None else classes
    kind = data_cfg.get("shift", "none") if shift_kind is None else shift_kind
    x_tr, y_tr = select(arrays.x_train, arrays.y_train, classes, data_cfg.get("train_size"), seed)
    x_te, y_te = select(arrays.x_test, arrays.y_test, classes, data_cfg.get("test_size"), seed)
    x_tr, x_te = shift(x_tr, kind), shift(x_te, kind)
    stats = scaling_stats(x_tr) if data_cfg.scaling == "standard" else None
    n_classes = len(classes) if classes is not None else arrays.num_classes
    return Prepared(scale(x_tr, data_cfg.scaling, stats), y_tr, scale(x_te, data_cfg.scaling, stats), y_te,
                    n_classes)
