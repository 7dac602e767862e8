"""`bnexp doctor` on small saved models with known, injected pitfalls (tests/doctor_zoo.py): each model gets
exactly its pitfall's claim, the healthy one nothing; fix=true raises the stale model's accuracy without
touching the input; every bad input is one line, exit 2. Keras 3 models are checked in this process
(diagnose() with the request the parent prepares); the tf-keras .h5 model and the missing-custom-class
case go through the real CLI (parent + child process; the missing class stops in the parent). Model files
that carry code: tests/test_doctor_untrusted.py."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import doctor_zoo
from bnexp import cli, doctor
from bnexp.errors import UserError
from bnexp.workers import child_env
from bnexp.toolkit import diagnose, precise_bn
from bnexp.toolkit.framework import activate
from conftest import ROOT, bnexp_env


@pytest.fixture(scope="session")
def fw():
    return activate("keras3")


@pytest.fixture(scope="session")
def zoo(tmp_path_factory, fw):
    """Every model, trained once per session: Keras 3 here, tf-keras in a subprocess running alongside."""
    folder = tmp_path_factory.mktemp("zoo")
    legacy = subprocess.Popen([sys.executable, str(ROOT / "tests" / "doctor_zoo.py"), str(folder)], cwd=ROOT,
                              env={**child_env("tf_keras", "cpu"), "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    paths = doctor_zoo.build_keras3(folder, fw)
    out, _ = legacy.communicate(timeout=300)
    assert legacy.returncode == 0, out
    paths["frozen_bn"] = folder / "frozen_bn.h5"
    paths["data"] = folder / "data.npz"
    return paths


def check(fw, tmp_path, model, data, *extra):
    """The report for `model` on `data`, through the parent's checks and request."""
    request, _, _ = doctor.prepare([f"model={model}", f"data={data}", f"out={tmp_path / 'out'}", *extra])
    return diagnose.diagnose(request, fw)


def claims(report) -> set[str]:
    return {f["claim"] for f in report["findings"]}


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- one injected pitfall each


def test_healthy_model_has_no_finding(fw, zoo, tmp_path):
    report = check(fw, tmp_path, zoo["healthy"], zoo["data"])
    assert report["findings"] == []
    assert doctor.exit_code(report) == 0
    assert {h["claim"] for h in report["healthy"]} >= {"C01", "C03", "C04", "C06", "C10", "C15"}
    acc = report["accuracy"]
    assert abs(acc["moving"] - acc["population"]) < 0.02


def test_stale_moving_statistics_are_c01_and_fix_raises_accuracy(fw, zoo, tmp_path):
    before = sha(zoo["stale"])
    report = check(fw, tmp_path, zoo["stale"], zoo["data"], "fix=true")
    assert claims(report) == {"C01"}
    assert doctor.exit_code(report) == 1
    acc = report["accuracy"]
    assert acc["population"] - acc["moving"] > 0.2  # the decomposed gap: stale statistics, not the weights
    fix = report["fix"]
    assert fix["accuracy_after"] > fix["accuracy_before"] + 0.2
    assert fix["status"] == "recommended" and fix["interval"][0] > 0
    assert (tmp_path / "out" / "stale.recalibrated.keras").is_file()
    assert sha(zoo["stale"]) == before  # the input is never touched


def test_shifted_domain_offers_adaptation_r2(fw, zoo, tmp_path):
    """The healthy model on inverted inputs: its statistics no longer fit; with domain=shifted the finding is
    R2 (adapt the statistics on unlabeled target samples), not a training fault (C01)."""
    with np.load(zoo["data"]) as z:
        x, y = z["x"], z["y"]
    np.savez(tmp_path / "inverted.npz", x=x.max() - x, y=y)
    report = check(fw, tmp_path, zoo["healthy"], tmp_path / "inverted.npz", "domain=shifted")
    assert "R2" in claims(report) and "C01" not in claims(report)
    assert all("shifted domain" in f["fix"] for f in report["findings"] if f["claim"] == "R2")
    with pytest.raises(UserError, match="domain='other'"):
        doctor.prepare([f"model={zoo['healthy']}", f"data={zoo['data']}", "domain=other"])


def test_statistics_never_updated_are_c03(fw, zoo, tmp_path):
    report = check(fw, tmp_path, zoo["never_updated"], zoo["data"])
    assert claims(report) == {"C03"}
    assert {f["layer"] for f in report["findings"]} == {"conv_bn", "fc_bn"}
    assert all(f["severity"] == "error" for f in report["findings"])


def test_training_true_in_call_is_c04_with_custom_objects_module(fw, zoo, tmp_path):
    report = check(fw, tmp_path, zoo["training_true"], zoo["data"], "custom_objects=doctor_custom")
    assert claims(report) == {"C04"}
    (f,) = report["findings"]
    assert f["numbers"]["relative"] > 0.01 and f["numbers"]["inference_call_changes_moving_stats"]


def test_build_time_training_false_overridden_by_keras3_is_c15(fw, zoo, tmp_path):
    report = check(fw, tmp_path, zoo["base_training_false"], zoo["data"])
    assert claims(report) == {"C15"}
    (f,) = report["findings"]
    assert f["severity"] == "warning" and f["layer"] == "base" and f["kind"] == "measured"
    assert f["numbers"]["bn_layers_batch_statistics_under_fit"] == 2


def test_tiny_batch_groups_after_dense_are_c11(fw, zoo, tmp_path):
    report = check(fw, tmp_path, zoo["healthy"], zoo["data"], "train_batch_size=2")
    assert claims(report) == {"C11"}
    (f,) = report["findings"]  # the conv BN averages over 2 x 12 x 12 values: fine
    assert f["layer"] == "fc_bn" and f["numbers"]["values_per_channel"] == 2


def test_std_or_negative_in_the_variance_slot_is_c10(fw, zoo, tmp_path):
    model = fw.keras.models.load_model(zoo["healthy"], compile=False)
    x = np.load(zoo["data"])["x"]
    stats = precise_bn.population_stats(model, [x[i:i + 64] for i in range(0, 640, 64)])
    conv_bn, fc_bn = model.get_layer("conv_bn"), model.get_layer("fc_bn")
    conv_bn.moving_variance.assign(np.sqrt(stats.layers[0].var_biased).astype(np.float32))  # std, not variance
    fc_bn.moving_variance.assign(-fc_bn.moving_variance.numpy())
    path = tmp_path / "std_slot.keras"
    model.save(path)
    report = check(fw, tmp_path, path, zoo["data"])
    assert claims(report) == {"C10"}
    assert {f["layer"] for f in report["findings"]} == {"conv_bn", "fc_bn"}
    assert "C01" not in {h["claim"] for h in report["healthy"]}  # no layer left to call healthy there


def test_model_without_bn_says_so_and_passes(fw, zoo, tmp_path):
    report = check(fw, tmp_path, zoo["no_bn"], zoo["data"])
    assert report["findings"] == [] and "no BatchNormalization" in report["note"]
    assert doctor.exit_code(report) == 0


def test_image_folder_with_class_subfolders(fw, zoo, tmp_path):
    from PIL import Image

    z = np.load(zoo["data"])
    for i in range(24):
        folder = tmp_path / "images" / f"class{z['y'][i]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((z["x"][i, :, :, 0] * 255).astype(np.uint8)).save(folder / f"{i}.png")
    report = check(fw, tmp_path, zoo["healthy"], tmp_path / "images", "data.scaling=unit")
    assert report["data"]["samples"] == 24 and report["data"]["labels"]
    assert "accuracy" in report


# ---------------------------------------------------------------- the real CLI: tf-keras .h5, exit codes, files


def run_cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "bnexp", "doctor", *map(str, args), f"out={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=bnexp_env(tmp_path / "cache"))


def test_cli_tf_keras_h5_frozen_bn_in_trainable_base(zoo, tmp_path):
    proc = run_cli(tmp_path, f"model={zoo['frozen_bn']}", f"data={zoo['data']}")
    assert proc.returncode == 0, proc.stdout + proc.stderr  # a warning only
    report = json.loads((tmp_path / "doctor.json").read_text())
    assert report["semantics"] == "tf_keras" and report["format"] == "h5"
    assert claims(report) == {"C06"}
    (f,) = report["findings"]
    assert set(f) == {"check", "claim", "kind", "layer", "severity", "what", "why", "fix", "numbers"}
    assert f["severity"] == "warning" and f["kind"] == "measured"
    assert "C06" in proc.stdout and "healthy (measured):" in proc.stdout
    assert "frozen BN inside a model that still trains" in (tmp_path / "doctor.md").read_text()


def test_cli_missing_custom_class_is_named(zoo, tmp_path):
    proc = run_cli(tmp_path, f"model={zoo['training_true']}", f"data={zoo['data']}")
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "AlwaysTrainingNet" in line and "custom_objects=" in line


# ---------------------------------------------------------------- bad input: one line, exit 2, no TensorFlow


def bad(tmp_path, capsys, *args) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(["doctor", *map(str, args), f"out={tmp_path / 'out'}"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bnexp: error:") and "\n" not in err
    return err


def test_bad_model_files(zoo, tmp_path, capsys):
    data = f"data={zoo['data']}"
    assert "no such file" in bad(tmp_path, capsys, f"model={tmp_path / 'missing.keras'}", data)
    (tmp_path / "notes.txt").write_text("hello")
    assert "not a Keras model" in bad(tmp_path, capsys, f"model={tmp_path / 'notes.txt'}", data)
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as z:
        z.writestr("readme.txt", "no config")
    assert "without config.json" in bad(tmp_path, capsys, f"model={tmp_path / 'other.keras'}", data)
    import h5py

    with h5py.File(tmp_path / "weights.h5", "w") as f:
        f.create_dataset("kernel", data=np.zeros(3))
    assert "weights only" in bad(tmp_path, capsys, f"model={tmp_path / 'weights.h5'}", data)
    (tmp_path / "folder").mkdir()
    assert "saved_model.pb" in bad(tmp_path, capsys, f"model={tmp_path / 'folder'}", data)


def test_bad_data(zoo, tmp_path, capsys):
    model = f"model={zoo['healthy']}"
    x, y = np.load(zoo["data"])["x"], np.load(zoo["data"])["y"]
    np.savez(tmp_path / "small.npz", x=x[:8, :10, :10], y=y[:8])
    assert "do not fit the model's input" in bad(tmp_path, capsys, model, f"data={tmp_path / 'small.npz'}")
    np.savez(tmp_path / "labels.npz", x=x[:8], y=y[:8] + 4)
    err = bad(tmp_path, capsys, model, f"data={tmp_path / 'labels.npz'}")
    assert "4 outputs" in err and "0..3" in err
    np.savez(tmp_path / "empty.npz", x=x[:0], y=y[:0])
    assert "no samples" in bad(tmp_path, capsys, model, f"data={tmp_path / 'empty.npz'}")
    np.savez(tmp_path / "no_x.npz", images=x[:8])
    assert "no array 'x'" in bad(tmp_path, capsys, model, f"data={tmp_path / 'no_x.npz'}")
    (tmp_path / "plain.txt").write_text("1 2 3\n")
    assert "is not an .npz file" in bad(tmp_path, capsys, model, f"data={tmp_path / 'plain.txt'}")
    assert "split" in bad(tmp_path, capsys, model, f"data={zoo['data']}", "split=test")
    assert "valid keys" in bad(tmp_path, capsys, model, f"data={zoo['data']}", "epochs=3")


def test_bad_data_from_a_dataset_is_caught_in_the_child(fw, zoo, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("BNEXP_CACHE", str(cache_dir))
    with pytest.raises(UserError, match=r"\(28, 28, 1\) do not fit the model's input \(12, 12, 1\)"):
        check(fw, tmp_path, zoo["healthy"], "fashion_mnist", "split=test", "doctor.max_samples=64")
