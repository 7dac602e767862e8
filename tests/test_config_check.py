"""Bad input: one clear message, before any TensorFlow import (unit level) and through the CLI."""

import copy
import time

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bnexp import CONFIG_DIR
from bnexp.config_check import validate
from bnexp.errors import UserError
from tests.conftest import bnexp


@pytest.fixture(scope="module")
def base():
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose("config"), resolve=True)


def test_defaults_are_valid(base):
    validate(base)


@pytest.mark.parametrize("key,value,message", [
    ("bn.momentum", -0.1, r"bn.momentum must be a number in \[0, 1\), got -0.1"),
    ("bn.momentum", 1.0, r"bn.momentum must be a number in \[0, 1\), got 1.0"),
    ("bn.momentum", "abc", r"bn.momentum must be a number .* got 'abc'"),
    ("train.batch_size", 0, r"train.batch_size must be a whole number in \[1, inf\], got 0"),
    ("train.batches", 0, r"train.batches must be a whole number"),
    ("train.batches", 2.5, r"train.batches must be a whole number"),
    ("train.lr", "fast", r"train.lr must be a number"),
    ("semantics", "keras4", r"unknown semantics 'keras4'; valid: keras3, tf_keras, keras2_v1, tf1"),
    ("data.name", "imagenet", r"unknown dataset .*'imagenet'; valid: fashion_mnist, mnist, cifar10"),
    ("model.name", "vgg", r"unknown model 'vgg'; valid: small_cnn, mlp, resnet_tiny"),
    ("norm", "wn", r"unknown norm 'wn'; valid: bn, none, gn, ln, brn"),
    ("device", "tpu", r"unknown device 'tpu'"),
    ("data.scaling", "minmax", r"unknown data.scaling 'minmax'"),
    ("bn.training", "yes", r"bn.training must be null, true or false"),
])
def test_bad_values_are_rejected_with_their_message(base, key, value, message):
    cfg = copy.deepcopy(base)
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(UserError, match=message):
        validate(cfg)


@pytest.mark.parametrize("override,message", [
    ("bn.momentum=1.0", "bn.momentum must be a number in [0, 1)"),
    ("train.batch_size=0", "train.batch_size must be a whole number"),
    ("bn.momentum=abc", "got 'abc'"),
    ("semantics=keras4", "unknown semantics 'keras4'"),
    ("scenario=nosuch", "Could not find 'scenario/nosuch'"),
    ("data=imagenet", "Could not find 'data/imagenet'"),
    ("model=vgg", "Could not find 'model/vgg'"),
])
def test_cli_rejects_bad_input_fast_without_training(tmp_path, cache_dir, override, message):
    start = time.perf_counter()
    proc = bnexp(["run", override], tmp_path / "r", cache_dir, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert time.perf_counter() - start < 10
    assert not list((tmp_path / "r").glob("runs/*/*/metrics.json"))  # nothing was run


def test_cli_unknown_scenario_lists_the_valid_ones(tmp_path, cache_dir):
    proc = bnexp(["run", "scenario=nosuch"], tmp_path / "r", cache_dir, check=False)
    assert "Available options in 'scenario'" in proc.stderr and "momentum" in proc.stderr


def test_cli_unwritable_results_folder(tmp_path, cache_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = bnexp(["run"], blocker / "results", cache_dir, check=False)
    assert proc.returncode == 2
    assert "is not writable" in proc.stderr
