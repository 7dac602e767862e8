"""bench.md after a subset of the measures: the rows of the others are kept, in the table's order."""

from bnexp import bench

OLD = """# bnexp benchmarks

Measured 2026-11-22 22:15 UTC on x86_64, 2 cores, Python 3.11.7 by `make bench`.

| measure | value | goal |
|---|---|---|
| training-step overhead: harness / plain | 0.963 | <= 1.05 |
| per-run fixed cost (1-step run), warm / fresh | 0.30 | <= 0.2 |
| whole reference grid (`make sweep`) | 29 min | <= 30 min |
| precise BN, 100 batches, vs one training epoch | 0.20x | |
"""


def test_a_subset_run_keeps_the_other_measures_rows_and_replaces_its_own():
    rows = [{"scenario": "momentum", "runs": 2, "run_s": 30.0, "wall_s": 15.0, "fit_s": 5.0, "precise_s": 2.0},
            {"scenario": "variance", "runs": 1, "run_s": 10.0, "wall_s": 10.0, "fit_s": 4.0, "precise_s": 1.0}]
    last = {"seconds": 3000, "runs": 835, "jobs": "2", "finished": "2026-12-02 00:00 UTC", "already_done": 0}
    new = bench._markdown({"reference": {"last": last, "planned_runs": 835}, "seconds": rows})
    text = bench.merged(new, OLD, {"5", "6"})
    table = [ln for ln in text.splitlines() if ln.startswith("| ") and "|---" not in ln]
    starts = ("| training-step overhead", "| per-run fixed cost", "| precise BN, 100", "| whole reference grid")
    assert len(table) == 1 + 4 + 1 + 3 and all(ln.startswith(p) for ln, p in zip(table[1:5], starts))
    assert "50 min (835 runs" in table[4] and "29 min" not in text
    assert "| momentum | 2 | 30 | 75% | 15.0 | 5.0 | 2.0 |" in text and "| all | 3 | 40 | 100% |" in text
    assert "kept from the previous file (measured 2026-11-22 22:15 UTC on x86_64, 2 cores, Python 3.11.7)." in text
    again = bench.merged(bench._markdown({"overhead": {"reps": 1, "order": "random", "steps": 1, "ratio_median": 1.5,
                                                       "cpu_ratio_median": 1.0, "noise_ratio_median": 1.0}}),
                         text, {"1"})
    assert "| 1.500 |" in again and "0.963" not in again and "| momentum | 2 | 30 |" in again  # section 6 kept


def test_doctor_rows_of_measure_7_are_replaced_on_rerun_and_kept_otherwise():
    run = {"n": 10000, "fix": False, "wall_s": 42.0, "peak_mib": 3000.0, "exit": 1, "bn_layers": 52,
           "samples": 10000, "errors": 52, "fix_status": None}
    fix = {**run, "n": 2000, "fix": True, "wall_s": 30.0, "fix_status": "not_recommended"}
    doctor = {"image": 96, "runs": [run, fix]}
    text = bench.merged(bench._markdown({"doctor": doctor}), OLD, {"7"})
    rows = [ln for ln in text.splitlines() if ln.startswith("| doctor")]
    assert len(rows) == 2 and "(96x96, 10,000 images)" in rows[0] and rows[0].endswith("| 42.0 s, 3,000 MiB | < 60 s |")
    assert "52 BN layers found" in rows[0] and "random images" in rows[0]
    assert "fix=true" in rows[1] and "copy not recommended" in rows[1] and rows[1].endswith("| |")
    assert "| training-step overhead: harness / plain | 0.963 |" in text  # other measures' rows kept
    again = bench.merged(bench._markdown({"overhead": {"reps": 1, "order": "random", "steps": 1, "ratio_median": 1.5,
                                                       "cpu_ratio_median": 1.0, "noise_ratio_median": 1.0}}),
                         text, {"1"})
    assert [ln for ln in again.splitlines() if ln.startswith("| doctor")] == rows  # kept when 7 is not rerun
