"""One process of the multi-process engine test (tests/test_multiprocess.py): joins a
`jax.distributed` job on 127.0.0.1 (CPU devices, gloo collectives), runs the tiny distillation
of the engine tests on the global mesh and writes its final parameters and member results.

    python tests/multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT TABLE_DIR OUT_DIR RESULT

Run with XLA_FLAGS=--xla_force_host_platform_device_count=<devices per process>.
"""

import json
import os
import sys

import numpy as np


def config(table_dir, out_dir):
    """The run both sides of the test make (a 1-process reference and the multi-process one)."""
    from engine_support import tiny_config  # tests/ is on sys.path

    return tiny_config(method="ckd", epochs=2, crd_negatives=32, checkpoint_every=0,
                       logit_table_dir=table_dir, out_dir=out_dir)


def main(argv):
    pid, nproc, port = int(argv[0]), int(argv[1]), int(argv[2])
    table_dir, out_dir, result = argv[3:6]
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU cross-process
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc,
                               process_id=pid, initialization_timeout=120)
    from engine_support import CountingTeacher

    from ckd_jax.train.distill import run_distillation
    from ckd_jax.train.engine import make_mesh

    teacher = CountingTeacher()
    summary = run_distillation(config(table_dir, out_dir), mesh=make_mesh(),
                               teacher_apply=teacher.apply, teacher_variables=teacher.variables)
    params = [np.asarray(x) for x in jax.tree.leaves(summary["_final"]["state"].params)]
    np.savez(result + ".npz", *params)
    with open(result + ".json", "w") as f:
        json.dump({"process_index": jax.process_index(), "process_count": jax.process_count(),
                   "global_devices": len(jax.devices()),
                   "local_devices": len(jax.local_devices()), "teacher_calls": teacher.calls,
                   "devices": summary["devices"], "members": summary["members"]}, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
