"""Shared pytest set-up, done once before jax is imported anywhere in the test session:

* 8 fake CPU devices (for the data-parallel tests), added to whatever ``XLA_FLAGS`` holds;
* LLVM optimisation level 0 for XLA:CPU (``SUITE_COMPILE_FLAG``), in this process and, through
  ``XLA_FLAGS`` (`experiments_support.user_env` keeps it), in the commands the tests start.
  Why: on a fresh machine most of the suite is compilation, and at XLA's default level the
  random-number code (threefry), which every model init and augmentation compiles, takes 7-10 s
  per program on this CPU (0.5 s at level 0; the engine tests take 35% less CPU time in all
  than at level 1, docs/testing.md).
  Like another CPU, it may move the last bits of a figure: every equality check in the suite
  compares runs made under the same setting, and the quickstart test, which compares with the
  README's table, runs without it. The package and its commands never set it;
* a persistent compilation cache in a folder made for this test session (removed at its end),
  with no minimum compile time, so the same program compiled again - by another run of the
  engine in this process, or by any subprocess a test starts (the command-line tests) - is
  loaded instead of compiled. The settings are exported as ``JAX_*`` environment variables, so
  every subprocess started by any test inherits them without doing anything. Set
  ``JAX_COMPILATION_CACHE_DIR`` yourself to keep a cache between runs (it is then not removed).

With pytest-xdist the controller's folder is inherited by its workers (they are started after
this file is imported), so the workers share one cache too.
"""

import os
import shutil
import tempfile

# XLA:CPU's LLVM level 0 instead of its default: the default compiles the threefry random-number
# code >10x slower on this CPU (7-10 s per program that draws random numbers, 0.5 s at level 0).
SUITE_COMPILE_FLAG = "--xla_backend_optimization_level=0"
_DEVICES_FLAG = "--xla_force_host_platform_device_count"
_flags = os.environ.get("XLA_FLAGS", "")
if _DEVICES_FLAG not in _flags:
    _flags = f"{_flags} {_DEVICES_FLAG}=8".strip()
if "xla_backend_optimization_level" not in _flags:  # a level the caller chose wins
    _flags = f"{_flags} {SUITE_COMPILE_FLAG}"
os.environ["XLA_FLAGS"] = _flags
os.environ.setdefault("JAX_PLATFORMS", "cpu")
__import__("ckd_jax").set_cpu_flags()  # the XLA:CPU flag our commands set, before jax starts

_OWN_CACHE = None  # the folder this process made (and removes), if it made one
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="ckd_jax_test_jax_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import jax  # noqa: E402

# jax reads the JAX_* variables when it is imported; set again in case jax was imported first.
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    # Only the process that made the folder removes it (an xdist worker inherits the variable
    # and made nothing).
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


# The longest single tests (CI's --durations), handed out first so that no worker is left alone
# with one of them at the end.
LONGEST_FIRST = ("test_quickstart.py", "test_sweep_jobs.py")


def pytest_collection_modifyitems(config, items):
    # Files holding a test marked `slow` run first, LONGEST_FIRST before the others:
    # pytest-xdist hands out whole files in this order (pyproject.toml turns off its own
    # reordering by file size, --no-loadscope-reorder). A stable sort: the order inside a file,
    # and among the other files, is kept.
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item):
        if item.path.name in LONGEST_FIRST:
            return LONGEST_FIRST.index(item.path.name)
        return len(LONGEST_FIRST) + (item.path not in slow_files)

    items.sort(key=rank)
