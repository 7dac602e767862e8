"""Keras 3 backends and pinned Keras releases, on the parent side: no TensorFlow, Keras, JAX or PyTorch import.

`backend=tensorflow|jax|torch` picks the backend Keras 3 runs on (semantics=keras3 only): the child
process gets KERAS_BACKEND before it imports Keras. `keras_version=<release>` runs a pinned Keras 3
release: installed once with pip into `<paths.cache_dir>/keras/<release>` (no dependencies: the venv's
numpy, h5py, optree, ... serve every Keras 3 release) and put first on the child's PYTHONPATH. The
release the venv already has needs no cache. A file lock makes concurrent runs install a release once.

`keras_version=nightly` is the development build: the registry's `keras-nightly` package (3.<next>.0.devYYYYMMDDHH,
Keras' master branch as of that date), installed like a release into `<cache_dir>/keras/nightly` the first
time and reused from there (offline too) until that folder is removed; the exact build is in the folder's
marker file and, as `keras`, in every run's record. `keras_version=3.16.0.dev2026102704` pins one build.

    check(cfg)            bad backend / release / registry / install -> one-line UserError, before any run
    child_env_extra(cfg)  {"KERAS_BACKEND": ..., "PYTHONPATH": <cached release folder>} for the child
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from bnexp.errors import UserError
from bnexp.names import BACKENDS
from bnexp.network import reachable

RELEASE = re.compile(r"^3\.\d+\.\d+$")  # Keras 3 releases: 3.minor.patch (Keras 2 is semantics=tf_keras)
DEV = re.compile(r"^3\.\d+\.\d+\.dev\d+$")  # one build of keras-nightly, e.g. 3.16.0.dev2026102704
NIGHTLY = "nightly"  # the newest keras-nightly build when first installed, kept in the cache
REGISTRY_TIMEOUT_S = 3.0
INSTALL_TIMEOUT_S = 300
COMPLETE = ".bnexp-complete"  # written last: a folder without it is a killed install, redone


def backend_of(cfg: dict) -> str:
    return cfg.get("backend") or "tensorflow"


def cache_root(cfg: dict) -> Path:
    return Path(cfg["paths"]["cache_dir"]).expanduser() / "keras"


def installed_keras() -> str | None:
    """The venv's own Keras version (read from its metadata, not imported)."""
    try:
        return importlib.metadata.version("keras")
    except importlib.metadata.PackageNotFoundError:
        return None


def installed(backend: str) -> bool:
    """Whether the backend's package is importable here (found, not imported)."""
    return importlib.util.find_spec(backend) is not None


def check(cfg: dict) -> None:
    """Raise UserError on a bad backend or keras_version; install a pinned release into the cache if needed."""
    backend, version, semantics = backend_of(cfg), cfg.get("keras_version"), cfg.get("semantics")
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)} (semantics=keras3 only)")
    if semantics != "keras3" and backend != "tensorflow":
        raise UserError(f"backend={backend} is for semantics=keras3 only; semantics={semantics} runs on TensorFlow "
                        f"(drop backend= or set semantics=keras3)")
    if semantics != "keras3" and version is not None:
        raise UserError(f"keras_version={version} is for semantics=keras3 only; semantics={semantics} uses tf-keras "
                        f"(drop keras_version= or set semantics=keras3)")
    if not installed(backend):
        raise UserError(f"backend={backend} is not installed in this Python ({sys.executable}); install it with "
                        f"pip install -e '.[backends]' (make setup does)")
    if version is not None:
        release_dir(cfg)


def release_dir(cfg: dict) -> str | None:
    """The folder to put first on the child's path for cfg's keras_version (installed on first use), or None
    when the run uses the venv's own Keras."""
    version = cfg.get("keras_version")
    if version is None:
        return None
    version = str(version)
    if not (RELEASE.match(version) or DEV.match(version) or version == NIGHTLY):
        raise UserError(f"unknown keras_version {version!r}: a Keras 3 release is 3.<minor>.<patch>, e.g. 3.10.0; "
                        f"nightly (or one build, e.g. 3.16.0.dev2026102704) is the development build "
                        f"(Keras 2 is semantics=tf_keras; null: the installed Keras {installed_keras()})")
    if version == installed_keras():
        return None
    folder = cache_root(cfg) / version
    if (folder / COMPLETE).exists():  # no network needed once cached
        return str(folder)
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):  # a second run waits, then finds it installed
        if not (folder / COMPLETE).exists():
            _install(version, folder)
    return str(folder)


def requirement(version: str) -> str:
    """What pip installs for a keras_version: a release of `keras`, or a build of `keras-nightly`."""
    if version == NIGHTLY:
        return "keras-nightly"
    return f"keras-nightly=={version}" if DEV.match(version) else f"keras=={version}"


def installed_build(folder: str | os.PathLike) -> str | None:
    """The exact Keras version installed in a cache folder (from its marker: keras==3.9.2,
    keras-nightly==3.16.0.dev2026102704), or None if it is not a complete install."""
    try:
        return (Path(folder) / COMPLETE).read_text().strip().split("==", 1)[1]
    except (OSError, IndexError):
        return None


def version_key(name: str) -> tuple:
    """Oldest first: 3.9.2 < 3.10.0 < 3.16.0.dev2026102704 < 3.16.0 (anything else last)."""
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)(?:\.dev(\d+))?$", name)
    if not m:
        return (math.inf,)
    major, minor, patch, dev = m.groups()
    return (int(major), int(minor), int(patch), 0 if dev else 1, int(dev or 0))


def cached_releases(cache_dir: str | os.PathLike) -> list[str]:
    """Keras releases and nightly builds installed in `<cache_dir>/keras`, oldest first (`nightly` shown as
    `nightly (3.16.0.dev...)`)."""
    root = Path(cache_dir).expanduser() / "keras"
    if not root.is_dir():
        return []
    found = [p.name for p in root.glob("3.*") if (p / COMPLETE).exists()]
    out = sorted(found, key=version_key)
    build = installed_build(root / NIGHTLY)
    return out + ([f"{NIGHTLY} ({build})"] if build else [])


def child_env_extra(cfg: dict) -> dict[str, str]:
    """Environment a keras3 child needs: KERAS_BACKEND and, for a pinned release, its folder as PYTHONPATH
    (to be put before the rest of PYTHONPATH). Empty for the other semantics."""
    if cfg.get("semantics") != "keras3":
        return {}
    extra = {"KERAS_BACKEND": backend_of(cfg)}
    folder = release_dir(cfg)
    if folder:
        extra["PYTHONPATH"] = folder
    return extra


def default_cache_dir() -> str:
    """paths.cache_dir as configs/paths/default.yaml resolves it here (BNEXP_CACHE or ~/.cache/bnexp)."""
    from omegaconf import OmegaConf

    from bnexp import CONFIG_DIR

    return str(OmegaConf.load(CONFIG_DIR / "paths" / "default.yaml").cache_dir)


def list_lines(cache_dir: str | os.PathLike | None = None) -> list[str]:
    """What `python -m bnexp list` shows about backends and Keras releases."""
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    lines = [f"  {name:<12} {text}{'' if installed(name) else '  [not installed]'}"
             for name, text in BACKENDS.items()]
    cached = cached_releases(cache_dir)
    lines.append(f"  keras_version: null (installed: {installed_keras()}); cached releases: "
                 f"{', '.join(cached) if cached else 'none'} (keras_version=3.x.y installs one; keras_version=nightly "
                 f"the development build)")
    return lines


# ---------------------------------------------------------------- installing a release


def _registry_host() -> str:
    """The host pip downloads from (PIP_INDEX_URL, else PyPI)."""
    index = os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"
    return urlparse(index).hostname or "pypi.org"



def _install(version: str, folder: Path) -> None:
    host = _registry_host()
    if not reachable(host, REGISTRY_TIMEOUT_S):
        raise UserError(f"keras_version={version} is not cached in {folder.parent} and the package registry "
                        f"({host}) is not reachable; install it once where it is (python -m bnexp run "
                        f"keras_version={version} ...) or drop keras_version=")
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    wanted = requirement(version)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--no-input", *(["--pre"] if wanted.startswith("keras-nightly") else []), "--target", str(tmp), wanted]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"keras_version={version}: pip install did not finish in {INSTALL_TIMEOUT_S} s "
                        f"(registry {host})") from None
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(_pip_failure(version, done.stderr + done.stdout, host))
    (tmp / COMPLETE).write_text(f"{wanted.split('==')[0]}=={_dist_version(tmp, wanted, version)}\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _dist_version(folder: Path, wanted: str, version: str) -> str:
    """The version pip put into `folder` (its .dist-info), so `nightly` records the exact build it got."""
    name = wanted.split("==")[0].replace("-", "_")
    infos = sorted(folder.glob(f"{name}-*.dist-info"))
    return infos[0].name[len(name) + 1:-len(".dist-info")] if infos else version


def _pip_failure(version: str, output: str, host: str) -> str:
    """One line from pip's failure: a release or nightly build the registry lacks (with those it has), or pip's
    last line."""
    offered = re.search(r"\(from versions: ([^)]*)\)", output)
    if (offered or "No matching distribution" in output) and requirement(version).startswith("keras-nightly"):
        builds = [v.strip() for v in (offered.group(1).split(",") if offered else []) if DEV.match(v.strip())]
        newest = sorted(builds, key=version_key)[-3:]
        return (f"keras_version={version}: the package registry ({host}) has no such keras-nightly build; newest "
                f"there: {', '.join(newest) if newest else 'none'} (keras_version=nightly takes the newest)")
    if offered or "No matching distribution" in output:
        releases = [v.strip() for v in (offered.group(1).split(",") if offered else []) if RELEASE.match(v.strip())]
        return (f"keras_version={version} is not a release on the package registry ({host}); Keras 3 releases "
                f"there: {', '.join(releases) if releases else 'see https://pypi.org/project/keras/#history'}")
    last = [line for line in output.strip().splitlines() if line.strip()]
    return f"keras_version={version}: pip install failed: {last[-1] if last else 'no output'}"
