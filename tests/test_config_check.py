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
    ("semantics", "keras4", r"unknown semantics 'keras4' \(did you mean keras3\?\); valid: keras3, tf_keras, keras2_v1, tf1"),
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
    (["run", "data.train_size=100000000"], {}, "data.train_size must be a whole number in [1, 60000] or null, got 100000000"),
    (["run", "data.test_size=0"], {}, "data.test_size must be a whole number in [1, 10000] or null, got 0"),
    (["run", "probe.precise_batches=0"], {}, "probe.precise_batches must be a whole number in [1, inf], got 0"),
    (["run", "data.classes=[11,12]"], {}, "data.classes must be null or a list of distinct class ids in 0..9"),
    (["run", "data.classes=[]"], {}, "data.classes is an empty list"),
    (["run", "train.batch_size=600", "data.train_size=500"], {}, "train.batch_size=600 exceeds the 500 training samples"),
    (["run", "paths.results_dir="], {}, "paths.results_dir is empty ('')"),
    (["run", "paths.cache_dir=/proc/x"], {}, "paths.cache_dir='/proc/x' is not a writable folder"),
    (["run", "data.raw_dir=/etc/hostname"], {}, "data.raw_dir='/etc/hostname' is not a readable folder"),
    (["run", "scenario=weights_order", "norm=gn"], {}, "norm='gn' is not valid for scenario weights_order: norm must be one of bn"),
    (["run", "scenario=variance", "variance.curve_batches=abc"], {},
     "variance.curve_batches='abc' is not valid for scenario variance: variance.curve_batches must be a whole number >= 1"),
    (["run", "scenario=frozen_base", "base.trainable=maybe"], {},
     "base.trainable='maybe' is not valid for scenario frozen_base: base.trainable must be one of true, false"),
    (["run", "scenario=checkpoint", "checkpoint.strategy=all"], {}, "checkpoint.strategy='all' is not valid"),
    (["run", "scenario=checkpoint", "model=resnet_tiny"], {},
     "model.name='resnet_tiny' is not valid for scenario checkpoint with semantics=tf1: model.name must be one of small_cnn, mlp"),
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
    (["run", "probe.precise_batches=10000000"], {}, "probe.precise_batches=10000000 x probe.precise_batch_size=64 draws"),
    (["run", "scenario=batch_size", "train.epochs=1e9"], {}, "train.epochs=1000000000.0 over 2048 training samples draws"),
    (["run", "seed=100000000000000000000"], {}, "seed must be a whole number in [0, 2147483647]"),
    (["run", "seed=-1"], {}, "seed must be a whole number in [0, 2147483647]"),
    (["run", "worker.max_runs=100000000000000000000"], {}, "worker.max_runs=100000000000000000000 is too large"),
    (["report", "paths.results_dir=RESULTS/nosuch"], {}, "RESULTS/nosuch holds no runs/ folder and no records.jsonl.gz: nothing to report"),
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
