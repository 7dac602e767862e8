"""`bnexp doctor` on model files that carry code (issue 24). tests/doctor_hostile.py builds one of each kind
the doctor accepts; each creates its marker file if its code runs. Without trust_model=true every one is
refused through the real CLI in one line, exit 2, before TensorFlow starts, and no marker appears; with it
the file loads as Keras loads it (the marker appears) and the report says so. Models of built-in layers
only pass; the rules themselves are checked on small configs, without files or TensorFlow."""

from __future__ import annotations

import base64
import json
import marshal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, bnexp_env

from bnexp import cli, doctor, model_safety
from bnexp.workers import child_env

# The CLI, then one stdout line saying whether TensorFlow was imported (a refusal must come before it starts).
CLI = ("import atexit, sys; atexit.register(lambda: print('tensorflow imported:', 'tensorflow' in sys.modules)); "
       "from bnexp.cli import main; main()")
REFUSAL_S = 10  # a refusal reads the file and stops: far below TensorFlow's start-up (12-26 s on 2 busy cores)

# file -> (its marker, what the refusal line names)
HOSTILE = {
    "lambda.h5": ("lambda_h5", ["Lambda layer 'lambda_h5/inner/marker'", "bytecode", "trust_model=true"]),
    "lambda_savedmodel": ("lambda_savedmodel", ["SavedModel folder", "Lambda layer 'lambda_savedmodel/marker'",
                                                "trust_model=true"]),
    "graph_writer": ("graph_writer", ["without Keras metadata", "WriteFile"]),
    "lambda.keras": ("lambda_keras", ["Lambda layer 'lambda_keras/per_row/marker'", "trust_model=true"]),
    "custom.h5": ("custom_h5", ["'MarkerLayer'", "not part of Keras", "custom_objects="]),
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Every hostile file, built once: tf-keras and Keras 3 files in two processes running alongside."""
    folder = tmp_path_factory.mktemp("hostile")
    builders = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "doctor_hostile.py"), str(folder)], cwd=ROOT,
                                 env={**child_env(semantics, "cpu"), "PYTHONPATH": str(ROOT)},
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for semantics in ("tf_keras", "keras3")]
    for builder in builders:
        out, _ = builder.communicate(timeout=300)
        assert builder.returncode == 0, out
    return folder


def doctor_cli(hostile, tmp_path, name, *extra) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", CLI, "doctor", f"model={hostile / name}",
                           f"data={hostile / 'data.npz'}", f"out={tmp_path / 'out'}", *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=bnexp_env(tmp_path / "cache"))
    return proc, time.monotonic() - start


def assert_refused(proc, elapsed, model) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bnexp: error: model={model} "), proc.stderr
    assert "tensorflow imported: False" in proc.stdout
    assert elapsed < REFUSAL_S
    return lines[0]


# ---------------------------------------------------------------- refused without the opt-in


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_file_is_refused_in_one_line_before_tensorflow(hostile, tmp_path, name):
    marker, words = HOSTILE[name]
    line = assert_refused(*doctor_cli(hostile, tmp_path, name), hostile / name)
    assert all(word in line for word in words), line
    assert not (hostile / f"{marker}.marker").exists()


def test_a_tensorflow_savedmodel_stays_refused_with_the_opt_in(hostile, tmp_path):
    """trust_model=true opens the door to Keras files only: a graph without Keras metadata is no Keras model."""
    line = assert_refused(*doctor_cli(hostile, tmp_path, "graph_writer", "trust_model=true"), hostile / "graph_writer")
    assert "without Keras metadata" in line
    assert not (hostile / "graph_writer.marker").exists()


def test_trust_model_takes_true_or_false_only(hostile, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["doctor", f"model={hostile / 'lambda.h5'}", f"data={hostile / 'data.npz'}", "trust_model=maybe"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == "bnexp: error: doctor: trust_model='maybe'; valid: true, false"


# ---------------------------------------------------------------- the opt-in


@pytest.mark.parametrize("name, marker", [("lambda_savedmodel", "lambda_savedmodel"), ("lambda.keras", "lambda_keras")])
def test_trust_model_loads_the_file_runs_its_code_and_says_so(hostile, tmp_path, name, marker):
    """tf-keras SavedModel and Keras 3 .keras (safe_mode=False reaches Keras): the lambda runs, as promised."""
    try:
        proc, _ = doctor_cli(hostile, tmp_path, name, "trust_model=true")
        assert proc.returncode == 0, proc.stdout + proc.stderr  # no BN layer: nothing to check
        assert (hostile / f"{marker}.marker").exists()
        report = json.loads((tmp_path / "out" / "doctor.json").read_text())
        assert report["trust_model"] is True
        assert "trust_model=true: loaded with Keras' safe_mode off" in proc.stdout
        assert "trust_model=true" in (tmp_path / "out" / "doctor.md").read_text()
    finally:
        (hostile / f"{marker}.marker").unlink(missing_ok=True)


# ---------------------------------------------------------------- what passes, and the rules


@pytest.mark.parametrize("name", ["builtins.h5", "builtins.keras"])
def test_models_of_builtin_layers_pass(hostile, name):
    """Wrappers, a nested model, regularizers, constraints and tensor ops (tf-keras TFOpLambda layers)."""
    model = doctor.inspect_model(str(hostile / name))
    assert list(model_safety.find_hazards(model["config"])) == []


def layer(cls, name, **config) -> dict:
    return {"class_name": cls, "config": {"name": name, "trainable": True, **config}}


def model(*layers, name="outer") -> dict:
    return {"class_name": "Functional", "config": {"name": name, "trainable": True, "layers": list(layers)}}


BYTECODE = base64.b64encode(marshal.dumps((lambda x: x).__code__)).decode()
K3_LAMBDA = {"class_name": "__lambda__", "config": {"code": BYTECODE, "defaults": None, "closure": None}}

RULES = [  # (config, custom_objects module, words of the refusal or None)
    (model(layer("Sequential", "inner", layers=[layer("Bidirectional", "bi", layer=layer("Lambda", "fn"))])),
     None, ["Lambda layer 'outer/inner/bi/fn'", "trust_model=true"]),
    (model(layer("Dense", "d", units=2, activation=K3_LAMBDA)), None, ["bytecode (in outer/d)", "trust_model=true"]),
    (model({"module": "my_layers", "class_name": "Scaler", "registered_name": "my>Scaler",
            "config": {"name": "s", "trainable": True, "fn": [BYTECODE, None, None]}}),
     "my_layers", ["bytecode (in outer/s)"]),
    (model(layer("TFOpLambda", "tf.io.write_file", function="io.write_file")), None, ["calls tf.io.write_file"]),
    (model(layer("TFOpLambda", "tf.print", function="compat.v1.print")), None, ["calls tf.compat.v1.print"]),
    (model(layer("ClassMethod", "m", cls_symbol="io.gfile", method_name="remove")), None, ["calls io.gfile.remove"]),
    (model(layer("TFSMLayer", "sm", filepath="/elsewhere")), None, ["TFSMLayer layer 'outer/sm'"]),
    (model({"module": "os", "class_name": "system", "config": {}, "registered_name": None}), None,
     ["'system' from module 'os'", "custom_objects="]),
    (model(layer("Dense", "d", activation={"module": "builtins", "class_name": "function", "config": "swishy",
                                           "registered_name": "function"})), None, ["function 'swishy'"]),
    (model(layer("pkg>Custom", "c")), "pkg.layers", None),
    (model(layer("TFOpLambda", "a", function="__operators__.add"), layer("TFOpLambda", "b", function="reshape"),
           layer("TFOpLambda", "c", function="compat.v1.nn.relu"), layer("SlicingOpLambda", "d",
                                                                        function="__operators__.getitem"),
           layer("InstanceProperty", "e", attr_name="flat_values"),
           layer("Dense", "f", activation={"module": "builtins", "class_name": "function", "config": "gelu"})),
     None, None),
    ({**model(layer("Dense", "d")), "compile_config": {"loss": {"module": "__main__", "class_name": "function",
                                                                "config": "my_loss"}}}, None, None),
]


@pytest.mark.parametrize("config, module, words", RULES)
def test_rules_on_configs(config, module, words):
    line = model_safety.refusal("m.keras", {"format": "keras", "config": config}, module)
    if words is None:
        assert line is None
    else:
        assert line and line.startswith("model=m.keras ") and all(word in line for word in words), line
