"""Shared pieces of the tests of `experiments/` scripts: loading a script as a module, and the
tiny digits sweep configuration."""

from __future__ import annotations

import importlib.util
import os

from ckd_jax.train.config import DistillConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def user_env(**extra: str) -> dict:
    """The environment for a command a test starts as a user's shell would: one CPU device (not
    the suite's eight, with which each device's share is too small for XLA to split a reduction
    across threads), the suite's other ``XLA_FLAGS`` (its compile setting, tests/conftest.py),
    and `extra`."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                                if not f.startswith("--xla_force_host_platform_device_count"))
    env.update(extra)
    return env


def load_experiment(name: str):
    """`experiments/<name>.py` as a fresh module object (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"_exp_{name}", os.path.join(ROOT, "experiments", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Width-4 TinyCNN students on digits, 2 cosine pseudo-epochs, no checkpoints.
TINY_SWEEP_BASE = DistillConfig(dataset="digits", subset_size=200, schedule="cosine", epochs=2,
                                batch_size=32, student_kwargs={"width": 4}, checkpoint_every=0,
                                progress=False, eval_batch_size=400)


def run_main(name: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """`experiments/<name>.py argv` in this process, as its `__main__` block runs it
    (`ckd_jax.cli.run_command`: a bad input is one line on stderr and exit status 2):
    (status, stdout, stderr). For the checks that need no fresh process (argument errors); the
    command's real start-up is tested once per command in a subprocess elsewhere."""
    from ckd_jax.cli import run_command

    main = load_experiment(name).main
    capsys.readouterr()  # start from empty buffers
    try:
        status = run_command(main, argv, prog=f"{name}.py")
    except SystemExit as e:  # argparse's own usage errors: status 2, message on stderr
        status = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return status, out, err
