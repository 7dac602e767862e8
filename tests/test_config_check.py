"""Bad input: one clear line, before any TensorFlow import, at unit level and through the CLI (in-process,
with process creation forbidden, and once in a fresh interpreter that must not have imported TensorFlow)."""

import copy
import os
import time

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bnexp import CONFIG_DIR
from bnexp.config_check import validate
from bnexp.errors import UserError


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
    ("semantics", "keras4",
     r"unknown semantics 'keras4' \(did you mean keras3\?\); valid: keras3, tf_keras, keras2_v1, tf1"),
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


# Every bad input of README's table "Bad input" that a config check catches: (argv, environment, message).
# Each must end in one line on stderr, exit 2, fast, with no child process (so no TensorFlow) started.
BAD_INPUT = [
    (["run", "bn.momentum=1.0"], {}, "bn.momentum must be a number in [0, 1), got 1.0"),
    (["run", "bn.momentum=abc"], {}, "bn.momentum must be a number in [0, 1), got 'abc'"),
    (["run", "bn.momentum=nan"], {}, "bn.momentum must be a finite number, got nan"),
    (["run", "bn.epsilon=inf"], {}, "bn.epsilon must be a finite number, got inf"),
    (["run", "train.batch_size=0"], {}, "train.batch_size must be a whole number in [1, inf], got 0"),
    (["run", "semantics=keras4"], {}, "unknown semantics 'keras4' (did you mean keras3?); valid: keras3, tf_keras"),
    (["run", "scenario=nosuch"], {}, "unknown scenario 'nosuch'; valid: batch_size, bn_benefit, checkpoint"),
    (["run", "scenario=momentm"], {}, "unknown scenario 'momentm' (did you mean momentum?); valid:"),
    (["run", "data=imagenet"], {}, "unknown data 'imagenet'; valid: cifar10, fashion_mnist, mnist"),
    (["run", "model=vgg"], {}, "unknown model 'vgg'; valid: mlp, resnet_tiny, small_cnn"),
    (["run", "bn.momentm=0.9"], {}, "unknown key bn.momentm (did you mean bn.momentum?); keys under bn: momentum"),
    (["run", "+bn.momentm=0.9"], {}, "unknown key bn.momentm (did you mean bn.momentum?)"),
    (["run", "data.train_size=100000000"], {},
     "data.train_size must be a whole number in [1, 60000] or null, got 100000000"),
    (["run", "data.test_size=0"], {}, "data.test_size must be a whole number in [1, 10000] or null, got 0"),
    (["run", "probe.precise_batches=0"], {}, "probe.precise_batches must be a whole number in [1, inf], got 0"),
    (["run", "data.classes=[11,12]"], {}, "data.classes must be null or a list of distinct class ids in 0..9"),
    (["run", "data.classes=[]"], {}, "data.classes is an empty list"),
    (["run", "train.batch_size=600", "data.train_size=500"], {},
     "train.batch_size=600 exceeds the 500 training samples"),
    (["run", "paths.results_dir="], {}, "paths.results_dir is empty ('')"),
    (["run", "paths.cache_dir=/proc/x"], {}, "paths.cache_dir='/proc/x' is not a writable folder"),
    (["run", "data.raw_dir=/etc/hostname"], {}, "data.raw_dir='/etc/hostname' is not a readable folder"),
    (["run", "scenario=weights_order", "norm=gn"], {},
     "norm='gn' is not valid for scenario weights_order: norm must be one of bn"),
    (["run", "scenario=variance", "variance.curve_batches=abc"], {},
     "variance.curve_batches='abc' is not valid for scenario variance: variance.curve_batches must be a whole "
     "number >= 1"),
    (["run", "scenario=frozen_base", "base.trainable=maybe"], {},
     "base.trainable='maybe' is not valid for scenario frozen_base: base.trainable must be one of true, false"),
    (["run", "scenario=checkpoint", "checkpoint.strategy=all"], {}, "checkpoint.strategy='all' is not valid"),
    (["run", "scenario=checkpoint", "model=resnet_tiny"], {},
     "model.name='resnet_tiny' is not valid for scenario checkpoint with semantics=tf1: model.name must be one of "
     "small_cnn, mlp"),
    (["run", "scenario=momentum", "momentum.replay=[0.5,1.5]"], {},
     "each entry of momentum.replay must be a number >= 0 and < 1 or exp"),
    (["run", "scenario=bn_benefit", "train.batches=30"], {}, "a multiple of bn_benefit.eval_every"),
    (["run", "bn.momentum=0.9,0.99"], {}, "the overrides list several values (a,b); add -m"),
    (["run", "-m", "bn.momentum=0.9,1.5"], {}, "bn.momentum must be a number in [0, 1), got 1.5"),
    (["run"], {"BNEXP_JOBS": "abc"}, "BNEXP_JOBS='abc' must be a whole number >= 1"),
    (["sweep"], {"BNEXP_JOBS": "0"}, "BNEXP_JOBS='0' must be a whole number >= 1"),
    (["sweep", "sweep=reference", "scenarios="], {}, "scenarios= is empty; give one or more of momentum"),
    (["sweep", "sweep=huge"], {}, "unknown sweep 'huge'; valid: frameworks, quick, reference"),
    (["sweep", "sweep=quick", "scenarios=nosuch"], {}, "sweep quick has no grid for nosuch"),
    (["sweep"], {}, "bnexp sweep needs sweep=NAME: pass sweep=frameworks|quick|reference"),
    (["sweep", "scenarios=momentum"], {}, "bnexp sweep needs sweep=NAME"),
    (["run", "force=maybe"], {}, "force must be true or false, got 'maybe'"),
    (["run", "force=no"], {}, "force must be true or false, got 'no'"),
    (["run", "bn.epsilon=1e308"], {}, "bn.epsilon must be in [1.18e-38, 1), got 1e+308"),
    (["run", "bn.epsilon=1e-50"], {}, "bn.epsilon must be in [1.18e-38, 1), got 1e-50"),
    (["run", "train.lr=1e300"], {}, "train.lr=1e+300 does not fit a float32"),
    (["run", "train.batches=1000000000000"], {},
     "train.batches=1000000000000 x train.batch_size=64 draws 6.4e+13 samples; at most 1e+08"),
    (["run", "probe.precise_batches=10000000"], {},
     "probe.precise_batches=10000000 x probe.precise_batch_size=64 draws"),
    (["run", "scenario=batch_size", "train.epochs=1e9"], {},
     "train.epochs=1000000000.0 over 2048 training samples draws"),
    (["run", "seed=100000000000000000000"], {}, "seed must be a whole number in [0, 2147483647]"),
    (["run", "seed=-1"], {}, "seed must be a whole number in [0, 2147483647]"),
    (["run", "worker.max_runs=100000000000000000000"], {}, "worker.max_runs=100000000000000000000 is too large"),
    (["report", "paths.results_dir=RESULTS/nosuch"], {},
     "RESULTS/nosuch holds no runs/ folder and no records.jsonl.gz: nothing to report"),
    (["report", "paths.results_dir="], {}, "paths.results_dir is empty"),
]


@pytest.fixture
def no_child(monkeypatch):
    """Fail the test if anything starts a process (a run's child would import TensorFlow)."""
    import subprocess

    def boom(*args, **kwargs):
        raise AssertionError(f"a process was started: {args[0] if args else kwargs}")

    monkeypatch.setattr(subprocess, "Popen", boom)


@pytest.mark.parametrize("argv,env,message", BAD_INPUT, ids=[" ".join(a) + str(e or "") for a, e, _ in BAD_INPUT])
def test_bad_input_is_one_line_before_tensorflow(tmp_path, monkeypatch, capsys, no_child, argv, env, message):
    from bnexp.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BNEXP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BNEXP_RESULTS", str(tmp_path / "results"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    argv = [a.replace("RESULTS", str(tmp_path)) for a in argv]
    start = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert time.perf_counter() - start < 10
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("bnexp: error: "), err
    assert message.replace("RESULTS", str(tmp_path)) in err, err
    assert "+bn" not in err  # never Hydra's "use +key" advice
    assert not list(tmp_path.glob("**/runs/*/*"))  # nothing was run
    assert not (tmp_path / "nosuch").exists()  # `report` on a missing folder does not create it


@pytest.mark.parametrize("override,message", [
    ("bn.momentum=nan", "bn.momentum must be a finite number, got nan"),
    ("seed=100000000000000000000", "seed must be a whole number in [0, 2147483647]"),
    ("force=maybe", "force must be true or false, got 'maybe'"),
])
def test_bad_input_through_the_real_cli_never_imports_tensorflow(tmp_path, override, message):
    import subprocess
    import sys

    code = (f"import sys\nfrom bnexp.cli import main\ntry:\n    main(['run', {override!r}])\n"
            "finally:\n    print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "BNEXP_RESULTS": str(tmp_path), "BNEXP_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 2 and proc.stdout.strip() == "False False"
    assert proc.stderr.strip().startswith(f"bnexp: error: {message}") and proc.stderr.count("\n") == 1


# The property: every numeric key of the config checks, fed the same hostile values, is refused with a line
# that names it. Values go through Hydra's override parser (what `key=value` on the command line gives), then
# into the resolved config, then `validate`: the CLI path without composing 150 configs.
NUMERIC_KEYS = ["bn.momentum", "bn.epsilon", "train.batches", "train.batch_size", "train.lr", "train.timeout_s",
                "train.epochs", "probe.eval_batch_size", "probe.precise_batches", "probe.precise_batch_size", "seed",
                "data.train_size", "data.test_size", "worker.max_runs", "worker.pool_size", "worker.chunk",
                "verbose"]
HOSTILE = ["nan", "inf", "-inf", "-1", "0", "1e300", "100000000000000000000", "abc", "true", "false", "", "[]"]
VALID = {("bn.momentum", "0"), ("seed", "0"), ("verbose", "0")}  # 0 means something there: last batch, seed 0, silent


@pytest.fixture(scope="module")
def bases():
    from bnexp.config_check import compose

    return {"default": compose([])[0], "batch_size": compose(["scenario=batch_size"])[0]}  # train.epochs is set there


@pytest.mark.parametrize("key", NUMERIC_KEYS)
def test_every_numeric_key_refuses_every_hostile_value_in_seconds(bases, no_child, key):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    start = time.perf_counter()
    base = bases["batch_size" if key == "train.epochs" else "default"]
    for raw in HOSTILE:
        if (key, raw) in VALID:
            continue
        (o,) = OverridesParser.create().parse_overrides([f"{key}={raw}"])
        cfg = copy.deepcopy(base)
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        assert leaf in node, f"{key} is not in the config"
        node[leaf] = o.value()
        with pytest.raises(UserError) as e:
            validate(cfg)
        assert key in str(e.value) and "\n" not in str(e.value), (raw, str(e.value))
    assert time.perf_counter() - start < 10


def test_every_scenario_default_is_valid_and_its_allowed_keys_exist():
    from bnexp.config_check import _ABSENT, _get, compose, scenario_configs

    for name, node in scenario_configs().items():
        (cfg,) = compose([f"scenario={name}"])
        assert node.get("allowed"), f"{name} declares no scenario.allowed"
        for key in node["allowed"]:
            assert _get(cfg, key) is not _ABSENT, f"{name}: allowed key {key} is not in its config"


def test_unwritable_results_folder(tmp_path, capsys, no_child):
    from bnexp.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as e:
        main(["run", f"paths.results_dir={blocker / 'results'}", f"paths.cache_dir={tmp_path / 'cache'}"])
    assert e.value.code == 2
    assert "is not writable" in capsys.readouterr().err


def test_report_of_an_unknown_sweep_does_not_advise_running_it(tmp_path, capsys, no_child):
    from bnexp.cli import main

    (tmp_path / "runs").mkdir()
    with pytest.raises(SystemExit) as e:
        main(["report", f"paths.results_dir={tmp_path}", "sweep=nosuch"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"bnexp: error: unknown sweep 'nosuch'; sweeps: frameworks, quick, reference (with a manifest in "
                   f"{tmp_path}: none); or report every record with sweep=all")
    assert "bnexp sweep sweep=nosuch" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing written


def test_write_tests_leave_nothing_behind(tmp_path, monkeypatch):
    """The results and cache write tests leave no probe file, and on failure no folder they created."""
    import errno

    from bnexp import store as store_mod
    from bnexp.config_check import _writable_cache
    from bnexp.store import Store

    Store(tmp_path / "ok").check_writable()
    assert [p.name for p in (tmp_path / "ok" / "runs").iterdir()] == []

    def full(path, text):  # what a full disk does: the file is created, its content cannot be written
        path.write_text("")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(store_mod, "write_text", full)
    with pytest.raises(UserError, match=r"is not writable \(No space left on device\)"):
        Store(tmp_path / "full").check_writable()
    assert not (tmp_path / "full").exists()
    (tmp_path / "had").mkdir()
    with pytest.raises(UserError, match="paths.cache_dir=.* is not a writable folder"):
        _writable_cache(str(tmp_path / "had" / "cache"))
    assert list((tmp_path / "had").iterdir()) == []  # its own folder is kept, nothing in it


# ---------------------------------------------------------------- a dataset that is not on this machine (issue #28)

# The CLI with the network answering nothing (the test must not depend on this machine's network), then one
# stdout line saying whether TensorFlow was imported: a missing dataset must be refused before it starts.
OFFLINE_CLI = ("import atexit, sys; import bnexp.network; bnexp.network.reachable = lambda *a, **k: False; "
               "atexit.register(lambda: print('tensorflow imported:', 'tensorflow' in sys.modules)); "
               "from bnexp.cli import main; main()")
MISSING_DATA_S = 5  # the check reads a few folders; TensorFlow's start-up alone takes 12-26 s on 2 busy cores


def _keras_file(path):
    """A .keras file of built-in layers, as far as the doctor's parent reads one (config and metadata)."""
    import json
    import zipfile

    def layer(cls, **config):
        return {"module": "keras.layers", "class_name": cls, "registered_name": None, "config": config}

    config = {"module": "keras", "class_name": "Sequential", "registered_name": None,
              "config": {"name": "m", "layers": [layer("InputLayer", batch_shape=[None, 32, 32, 3], name="input"),
                                                 layer("BatchNormalization", name="bn"),
                                                 layer("Flatten", name="flatten"),
                                                 layer("Dense", units=10, name="dense")]}}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
    return path


@pytest.mark.parametrize("argv,key,name", [
    (["doctor", "data=cifar10"], "data", "cifar10"),
    (["doctor", "data=mnist", "split=test"], "data", "mnist"),
    (["run", "data=cifar10"], "data", "cifar10"),
    (["run", "data.name=mnist"], "data", "mnist"),
    (["run", "data.name=cifar10", "model=resnet_tiny"], "data", "cifar10"),
    (["run", "scenario=frozen_base", "transfer.source=mnist"], "transfer.source", "mnist"),
])
def test_a_dataset_not_on_this_machine_is_one_line_before_tensorflow(tmp_path, argv, key, name):
    """An empty TFDS data dir and data cache, no network: one line naming the key, the dataset, where it was
    looked for and what is valid here; exit 2 in seconds, before TensorFlow, nothing written."""
    import subprocess
    import sys

    from bnexp.config_check import DOWNLOAD_HOSTS

    (tmp_path / "tfds").mkdir()
    if argv[0] == "doctor":
        argv = [*argv, f"model={_keras_file(tmp_path / 'm.keras')}", f"out={tmp_path / 'out'}"]
    env = {**os.environ, "TFDS_DATA_DIR": str(tmp_path / "tfds"), "BNEXP_CACHE": str(tmp_path / "cache"),
           "BNEXP_RESULTS": str(tmp_path / "results")}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", OFFLINE_CLI, *argv], capture_output=True, text=True, timeout=120,
                          env=env)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "tensorflow imported: False", proc.stdout
    (line,) = proc.stderr.splitlines()
    assert line.startswith(
        f"bnexp: error: {key}={name} is not on this machine (not prepared in the TFDS data dir {tmp_path / 'tfds'}, "
        f"not cached as {tmp_path / 'cache' / 'data' / name}.npz) and {DOWNLOAD_HOSTS[name]} is not reachable "
        f"to download it; "), line
    valid = line.split("reachable to download it; ", 1)[1]
    here = valid.split(";")[0]
    assert name not in here.split(": ", 1)[1].replace(",", " ").split()  # not listed as on this machine
    if argv[0] == "doctor":
        assert "an .npz file (x, optional y) or an image folder" in here and "TFDS_DATA_DIR" in valid
    else:
        assert here.startswith("datasets on this machine: ") and "data.tfds_data_dir=" in valid
    assert f"tfds.builder('{name}').download_and_prepare()" in valid
    assert elapsed < MISSING_DATA_S, elapsed
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("results/runs/*/*"))


def test_where_a_dataset_is_on_disk(tmp_path, monkeypatch):
    """bnexp.toolkit.data.load's sources, read on disk: the .npz cache, fashion_mnist's IDX folder, a prepared
    TFDS copy (DIR/NAME/x.y.z/dataset_info.json) in data.tfds_data_dir, else $TFDS_DATA_DIR."""
    from bnexp.config_check import data_on_disk, tfds_data_dir, tfds_prepared

    tfds, cache = tmp_path / "tfds", tmp_path / "cache"
    assert not data_on_disk("cifar10", None, str(tfds), str(cache))
    (cache / "data").mkdir(parents=True)
    (cache / "data" / "cifar10.npz").write_bytes(b"")  # a damaged cache is rebuilt by the loader: it counts
    assert data_on_disk("cifar10", None, str(tfds), str(cache))
    raw = tmp_path / "raw"
    raw.mkdir()
    assert data_on_disk("fashion_mnist", str(raw), str(tfds), None)
    assert not data_on_disk("mnist", str(raw), str(tfds), None)  # data.raw_dir is read for fashion_mnist only
    assert not data_on_disk("fashion_mnist", str(tmp_path / "nowhere"), str(tfds), None)
    (tfds / "mnist" / "3.0.1").mkdir(parents=True)
    assert not tfds_prepared("mnist", str(tfds))  # a folder TFDS is still writing has no dataset_info.json yet
    (tfds / "mnist" / "incomplete.ABC123_3.0.1").mkdir()
    (tfds / "mnist" / "incomplete.ABC123_3.0.1" / "dataset_info.json").write_text("{}")
    assert not tfds_prepared("mnist", str(tfds))
    (tfds / "mnist" / "3.0.1" / "dataset_info.json").write_text("{}")
    assert tfds_prepared("mnist", str(tfds)) and data_on_disk("mnist", None, str(tfds), None)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tfds))
    assert tfds_data_dir(None) == tfds and tfds_prepared("mnist", None)
    monkeypatch.delenv("TFDS_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tfds_data_dir(None) == tmp_path / "home" / "tensorflow_datasets"


def test_the_data_rule_agrees_with_the_loader_and_tfds(tmp_path, monkeypatch):
    """config_check mirrors bnexp.toolkit.data.load (hosts, timeout, cache file) and TFDS' own idea of a prepared
    dataset and of its data dir (given, else $TFDS_DATA_DIR), asked of tensorflow_datasets in a fresh process
    (it reads $TFDS_DATA_DIR once, when imported): every dataset, before and after its variant folder is written."""
    import inspect
    import json
    import subprocess
    import sys

    import numpy as np

    from bnexp import config_check
    from bnexp.names import DATASETS
    from bnexp.toolkit import data

    assert config_check.DOWNLOAD_HOSTS == data.DOWNLOAD_HOSTS
    assert inspect.signature(data.load).parameters["download_timeout_s"].default == config_check.DOWNLOAD_TIMEOUT_S
    cache = tmp_path / "cache"
    config_check.data_cache("cifar10", cache).parent.mkdir(parents=True)
    np.savez(config_check.data_cache("cifar10", cache),
             **{k: np.zeros((2, 1), np.uint8 if k.startswith("x") else np.int64) for k in data.IDX_FILES})
    assert data.load("cifar10", cache_dir=cache).x_train.shape == (2, 1)  # the very file the loader reads

    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
    given = str(tmp_path / "given")
    ours_before = {(name, g): config_check.tfds_prepared(name, g) for name in DATASETS for g in (None, given)}
    script = """
import json, sys
from pathlib import Path
import tensorflow_datasets as tfds
rows = []
for name in sys.argv[2].split(","):
    for given in (None, sys.argv[1]):
        builder = tfds.builder(name, data_dir=given)
        row = [name, given, str(builder.data_dir_root), builder.is_prepared()]
        variant = Path(builder.data_dir)
        variant.mkdir(parents=True)
        (variant / "dataset_info.json").write_text(json.dumps({"name": name, "version": str(builder.version)}))
        rows.append(row + [tfds.builder(name, data_dir=given).is_prepared()])
print(json.dumps(rows))
"""
    proc = subprocess.run([sys.executable, "-c", script, given, ",".join(DATASETS)], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(rows) == 2 * len(DATASETS)
    for name, g, root, before, after in rows:
        assert str(config_check.tfds_data_dir(g)) == root, (name, g)
        assert (before, after) == (False, True), (name, g)
        assert ours_before[(name, g)] == before and config_check.tfds_prepared(name, g) == after, (name, g)


def test_the_launcher_default_jobs_is_the_one_the_checks_and_the_sweep_meta_name():
    from bnexp import config_check

    launcher = OmegaConf.load(CONFIG_DIR / "hydra" / "launcher" / "local.yaml")
    assert OmegaConf.to_yaml(launcher).count(f"oc.env:BNEXP_JOBS,{config_check.DEFAULT_JOBS}}}") == 1
