"""`bnexp doctor` on small saved models with known, injected pitfalls (tests/doctor_zoo.py): each model gets
exactly its pitfall's claim, the healthy one nothing; fix=true raises the stale model's accuracy without
touching the input; every bad input is one line, exit 2. The models people bring (issue #27): BN held by a custom
layer, a BatchNormalization subclass (frozen, scale off), the Keras guide's transfer recipe frozen and unfrozen,
training=True fixed when a functional model was built, fixes that hurt or do not help; each test states the
findings expected before the run. Keras 3 models are checked in this process
(diagnose() with the request the parent prepares); the tf-keras .h5 model and the missing-custom-class
case go through the real CLI (parent + child process; the missing class stops in the parent). Model files
that carry code: tests/test_doctor_untrusted.py."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile

import doctor_zoo
import numpy as np
import pytest
from conftest import ROOT, bnexp_env

from bnexp import cli, doctor
from bnexp.errors import UserError
from bnexp.toolkit import diagnose, precise_bn
from bnexp.toolkit.framework import activate
from bnexp.toolkit.models import batch_norm_layers
from bnexp.workers import child_env


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


def test_compiled_population_statistics_match_float64_numpy(fw, zoo):
    """The doctor's population statistics come from one compiled pass per batch, moments computed in the graph:
    the same numbers as every BN input taken out as float64 NumPy (the eager way), frozen BN layers included."""
    from bnexp.toolkit.models import intercepted

    model = fw.keras.models.load_model(zoo["healthy"], compile=False)
    model.get_layer("conv_bn").trainable = False  # a frozen BN is forced to batch statistics for the pass too
    x = np.load(zoo["data"])["x"][:256]
    batches = [x[i:i + 64] for i in range(0, 256, 64)]
    stored = {layer.name: layer.moving_mean.numpy().copy() for layer in batch_norm_layers(model)}
    got = diagnose.population_stats(fw, model, iter(batches))
    assert got.forward_passes == 4 and not model.get_layer("conv_bn").trainable
    assert all(np.array_equal(layer.moving_mean.numpy(), stored[layer.name]) for layer in batch_norm_layers(model))
    rows = {}

    def record(i, call, inputs, training, **kwargs):
        flat = np.asarray(inputs, np.float64).reshape(-1, inputs.shape[-1])
        rows.setdefault(i, []).append((flat.mean(0), flat.var(0)))
        return call(inputs, training=True, **kwargs)

    bns = batch_norm_layers(model)
    for layer in bns:
        layer.trainable = True
    with precise_bn.statistics_kept(model), intercepted(bns, record):
        for batch in batches:
            model(batch, training=False)
    for i, s in enumerate(got.layers):
        np.testing.assert_allclose(s.mean, np.mean([r[0] for r in rows[i]], 0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(s.var_biased, np.mean([r[1] for r in rows[i]], 0), rtol=1e-12, atol=1e-12)
        assert s.batches == 4 and s.m == 64 * (144 if s.name == "conv_bn" else 1)


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
    # the parent reads only x's header (not the images): a pickled x is still refused before any unpickling
    np.savez(tmp_path / "pickled.npz", x=np.array([[1, "a"]], dtype=object), y=y[:1])
    assert "allow_pickle=False" in bad(tmp_path, capsys, model, f"data={tmp_path / 'pickled.npz'}")
    np.savez_compressed(tmp_path / "compressed.npz", x=x[:8, :10, :10], y=y[:8])  # header read through deflate
    assert "(10, 10, 1) do not fit" in bad(tmp_path, capsys, model, f"data={tmp_path / 'compressed.npz'}")
    assert "split" in bad(tmp_path, capsys, model, f"data={zoo['data']}", "split=test")
    assert "valid keys" in bad(tmp_path, capsys, model, f"data={zoo['data']}", "epochs=3")


def test_bad_data_from_a_dataset_is_caught_in_the_child(fw, zoo, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("BNEXP_CACHE", str(cache_dir))
    with pytest.raises(UserError, match=r"\(28, 28, 1\) do not fit the model's input \(12, 12, 1\)"):
        check(fw, tmp_path, zoo["healthy"], "fashion_mnist", "split=test", "doctor.max_samples=64")


# ---------------------------------------------------------------- the zoo of issue #27


CUSTOM = "custom_objects=doctor_custom"


def measured(report):
    return [f for f in report["findings"] if f["kind"] == "measured"]


def latent(report):
    return [f for f in report["findings"] if f["kind"] == "latent"]


def texts(report, out):
    return doctor.terminal(report, out) + "\n" + doctor.markdown(report, out)


def copy_stats(fw, path, name):
    model = fw.keras.models.load_model(path, compile=False)
    (layer,) = [b for b in batch_norm_layers(model) if b.name == name]
    return layer, np.array(layer.moving_mean), np.array(layer.moving_variance)


def test_nested_block_bn_held_as_an_attribute(fw, zoo, tmp_path):
    """Expected: both BN layers found (block_bn inside the custom layer 'block', center off), both C01 errors
    (momentum 0.99, 20 steps), no other finding; the copy is recommended and its block_bn statistics replaced."""
    report = check(fw, tmp_path, zoo["nested_block"], zoo["data"], CUSTOM, "fix=true")
    assert report["bn_layers"] == ["block_bn", "fc_bn"] and report["bn_holders"]["block_bn"] == ["block"]
    assert claims(report) == {"C01"} and {f["layer"] for f in report["findings"]} == {"block_bn", "fc_bn"}
    assert all(f["severity"] == "error" for f in report["findings"]) and doctor.exit_code(report) == 1
    fix = report["fix"]
    assert fix["status"] == "recommended" and fix["interval"][0] > 0
    _, before_mean, _ = copy_stats(fw, zoo["nested_block"], "block_bn")
    _, after_mean, _ = copy_stats(fw, fix["path"], "block_bn")
    assert not np.allclose(before_mean, after_mean)  # recalibration reached the BN inside the block


def test_bn_subclass_frozen_and_without_scale(fw, zoo, tmp_path):
    """Expected: MyBatchNorm layers found (conv_mybn scale off, fc_mybn frozen), C01 errors on both, a C06 warning
    (fc_mybn frozen next to trainable layers); the copy is recommended, reaches the frozen layer and keeps it
    frozen; the optimizer state cannot be restored (the frozen layer changed the trainable weights) and the
    report says so."""
    report = check(fw, tmp_path, zoo["bn_subclass"], zoo["data"], CUSTOM, "fix=true")
    assert report["bn_layers"] == ["conv_mybn", "fc_mybn"]
    assert claims(report) == {"C01", "C06"}
    assert {f["layer"] for f in report["findings"] if f["claim"] == "C01"} == {"conv_mybn", "fc_mybn"}
    (c06,) = [f for f in report["findings"] if f["claim"] == "C06"]
    assert c06["severity"] == "warning" and "fc_mybn are frozen" in c06["what"]
    fix = report["fix"]
    assert fix["status"] == "recommended"
    assert any("optimizer" in d for d in fix["dropped"])
    layer, _, after_var = copy_stats(fw, fix["path"], "fc_mybn")
    _, _, before_var = copy_stats(fw, zoo["bn_subclass"], "fc_mybn")
    assert not layer.trainable and not np.allclose(before_var, after_var)


def test_guide_recipe_frozen_base_is_healthy_now_with_a_latent_risk(fw, zoo, tmp_path):
    """Expected: no measured finding (the frozen base's BN stays in inference mode under fit and its statistics do
    not move); one latent C15 risk for 'base' (unfreezing it lets Keras 3 override training=False), labelled as
    such and never an error; exit 0. Never the false claim that statistics were updated during fit."""
    report = check(fw, tmp_path, zoo["guide_frozen"], zoo["data"])
    assert measured(report) == [] and doctor.exit_code(report) == 0
    (risk,) = latent(report)
    assert risk["claim"] == "C15" and risk["severity"] == "risk" and risk["layer"] == "base"
    assert risk["what"].startswith("if you unfreeze 'base'")
    assert risk["numbers"]["bn_layers_batch_statistics_if_unfrozen"] == 2
    (ok,) = [h for h in report["healthy"] if h["claim"] == "C15"]
    assert "do not change" in ok["summary"]
    out = texts(report, tmp_path)
    assert "updated their statistics during fit" not in out and "Latent risks (not happening now)" in out


def test_unfreezing_probe_restores_every_trainable_flag(fw, zoo):
    model = fw.keras.models.load_model(zoo["guide_frozen"], compile=False)
    before = [(layer.name, layer.trainable) for layer in diagnose.all_layers(model)]
    with diagnose.unfrozen(model, model.get_layer("base")):
        assert all(b.trainable for b in batch_norm_layers(model))
    assert [(layer.name, layer.trainable) for layer in diagnose.all_layers(model)] == before


def test_guide_recipe_unfrozen_base_is_measured_c15(fw, zoo, tmp_path):
    """Expected: one measured C15 warning on 'base' (trainable, training=False overridden under fit: 2 BN layers in
    batch statistics), no latent risk (nothing to unfreeze), exit 0."""
    report = check(fw, tmp_path, zoo["base_training_false"], zoo["data"])
    (f,) = report["findings"]
    assert (f["claim"], f["kind"], f["severity"], f["layer"]) == ("C15", "measured", "warning", "base")
    assert "overrides it" in f["what"] and latent(report) == [] and doctor.exit_code(report) == 0


def test_build_time_training_true_in_a_functional_model(fw, zoo, tmp_path):
    """Expected: one C04 error naming both BN layers of 'base', under a direct call model(x) only (predict and
    evaluate run them in inference mode), with the flag's origin (training=True passed to 'base' when the model
    was built) and advice for that case; predict and evaluate listed healthy."""
    report = check(fw, tmp_path, zoo["build_time_true"], zoo["data"])
    (f,) = report["findings"]
    assert (f["claim"], f["severity"], f["layer"]) == ("C04", "error", "base_conv_bn, base_fc_bn")
    assert f["numbers"]["entry_points"] == "call" and f["numbers"]["relative"] > 0.01
    assert "a direct call model(x)" in f["what"] and "training=True passed to 'base'" in f["what"]
    assert "without training=True" in f["fix"] and "training=False" not in f["what"]
    assert report["entry_points"] == {"predict": [], "evaluate": [], "call": ["base_conv_bn", "base_fc_bn"],
                                      "fit": ["base_conv_bn", "base_fc_bn"]}
    (ok,) = [h for h in report["healthy"] if h["claim"] == "C04"]
    assert ok["summary"].startswith("predict and evaluate:")


def test_training_true_hard_coded_in_call_names_the_class(fw, zoo, tmp_path):
    report = check(fw, tmp_path, zoo["training_true"], zoo["data"], CUSTOM)
    (f,) = report["findings"]
    assert "AlwaysTrainingNet.call()" in f["what"] and f["numbers"]["entry_points"] == "predict, evaluate, call"
    assert not [h for h in report["healthy"] if h["claim"] == "C04"]  # the honoured flag is never "healthy"


def test_a_fix_that_hurts_is_not_recommended_and_not_written(fw, zoo, tmp_path):
    """Expected: C03 errors on both layers (statistics never updated, a model trained as if it had no BN); the
    recomputed statistics lower held-out accuracy, so the copy is not recommended and no file is written; C03's
    advice says recomputing does not help this model."""
    report = check(fw, tmp_path, zoo["never_updated"], zoo["data"], "fix=true")
    assert claims(report) == {"C03"}
    assert all("does not help" in f["fix"] for f in report["findings"])
    fix = report["fix"]
    assert fix["status"] == "not_recommended" and fix["path"] is None and fix["interval"][1] < 0
    assert not list((tmp_path / "out").glob("*recalibrated*")) and not list((tmp_path / "out").glob(".candidate*"))
    assert "NOT RECOMMENDED, none written" in texts(report, tmp_path / "out")


def test_a_fix_that_does_not_help_is_not_recommended(fw, zoo, tmp_path):
    report = check(fw, tmp_path, zoo["healthy"], zoo["data"], "fix=true")
    fix = report["fix"]
    assert report["findings"] == [] and fix["status"] == "not_recommended" and not fix["recommended"]
    assert not list((tmp_path / "out").glob("*recalibrated*"))


def test_findings_read_without_this_project(fw, zoo, tmp_path):
    """Words, not raw keys; what/why/do each a sentence; the claim linked to its report section."""
    report = check(fw, tmp_path, zoo["stale"], zoo["data"])
    out = texts(report, tmp_path / "out")
    assert "var_log_ratio" not in out and "x the data's" in out
    assert "what: " in out and "why: " in out and "do: " in out
    assert "results/report.md#scenario-momentum)" in doctor.markdown(report, tmp_path / "out")
    for f in report["findings"]:
        assert "points" in f["why"]  # the number that says why, with its unit


def test_dropout_feeding_bn_is_c21_and_bn_before_dropout_is_not(fw, zoo, tmp_path):
    """Expected before the run: Dense -> Dropout(0.5) -> BN learns a moving variance about 1/(1-0.5) = 2x or more
    the variance BN sees at inference (the conformance probe measured 2.4): C21, and the same variance gap is
    also what the statistics check flags as C01 (beyond 2x). Dense -> BN -> Dropout(0.5): no finding."""
    report = check(fw, tmp_path, zoo["dropout_bn"], zoo["data"])
    assert claims(report) == {"C01", "C21"}
    (f,) = [f for f in report["findings"] if f["claim"] == "C21"]
    assert f["layer"] == "fc_bn" and f["kind"] == "measured" and f["severity"] == "warning"
    assert f["numbers"]["dropout"] == "drop" and f["numbers"]["dropout_rate"] == 0.5
    assert f["numbers"]["median_var_ratio"] > diagnose.DROPOUT_VAR_RATIO
    assert "x the variance of its input at inference" in f["what"] and "Dropout after BN" in f["fix"]
    assert "scenario-conformance" in doctor.markdown(report, tmp_path / "out")
    assert check(fw, tmp_path, zoo["bn_dropout"], zoo["data"])["findings"] == []


def test_large_input_mean_is_a_latent_c18_risk(fw, zoo, tmp_path):
    """Expected before the run: a BN input with mean 1e4 and std about 1 gives one latent C18 risk (float32
    E[x^2]-E[x]^2 on the torch backend: relative error eps x (mean/std)^2, far above 10%), and nothing else (its
    statistics were recomputed); a latent risk never makes the exit code 1."""
    report = check(fw, tmp_path, zoo["large_mean"], zoo["data"])
    (f,) = report["findings"]
    assert (f["claim"], f["kind"], f["severity"], f["layer"]) == ("C18", "latent", "risk", "offset_bn")
    ratio, error = f["numbers"]["mean_over_std"], f["numbers"]["relative_variance_error"]
    assert 1e3 < ratio < 1e5
    assert error == pytest.approx(np.finfo(np.float32).eps * ratio ** 2, rel=1e-4) and error > diagnose.TORCH_VAR_ERROR
    assert doctor.exit_code(report) == 0
    assert "RISK    C18" in doctor.terminal(report, tmp_path / "out")
    assert "C18" not in claims(check(fw, tmp_path, zoo["healthy"], zoo["data"]))


def test_thresholds_compare_the_printed_value():
    acc = {"moving": 0.5004, "population": 0.5196, "batch": 0.5}  # printed 0.500 and 0.520: 2.0 points
    assert diagnose.gap_points(acc) == 2.0 and not diagnose.gap_points(acc) > diagnose.ACC_GAP_POINTS
    assert diagnose.shown(2.004, ".3g") == 2.0


def test_paired_rule():
    def judged(b, c, n=1000):
        before = np.array([True] * b + [False] * c + [True] * (n - b - c))
        after = np.array([False] * b + [True] * c + [True] * (n - b - c))
        return diagnose.paired_change(before, after)

    assert not judged(0, 0)["recommended"] and not judged(10, 14)["recommended"]
    assert judged(0, 8)["recommended"] and judged(5, 25)["recommended"] and not judged(30, 5)["recommended"]
    r = judged(5, 25)
    assert r["change"] == pytest.approx(0.02) and r["p_value"] < 0.05 and r["interval"][0] > 0


def test_a_check_process_past_its_timeout_is_killed_with_one_line(tmp_path):
    # the child (bnexp.launcher) is killed long before TensorFlow has started; its log is still written
    result = doctor.run_child({"semantics": "tf_keras", "device": "cpu"}, tmp_path, 0.05)
    assert result == {"status": "failed", "error": "no result after doctor.timeout_s=0.05 s"}
    assert (tmp_path / "doctor.log").is_file()
