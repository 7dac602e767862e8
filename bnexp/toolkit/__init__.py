"""The training side: everything that runs inside a run's child process (or `bnexp doctor`) and imports
TensorFlow. The parent side (bnexp.cli, sweep, runner, store, config_check, report, verdicts, figures)
never imports from here; it talks to the child through files (config.yaml in, result.json out)."""
