"""The accepted values of the training knobs that more than one module checks: one home each.

No jax import here, so the configs (`ckd_jax.train.config`, `ckd_jax.train.supervised`) can
check a run before jax starts. What each value means: `ckd_jax.train.optim` (schedules) and
`ckd_jax.train.engine.make_train_epoch` (loops).
"""

# Every schedule `optim.scheduled_lr` knows; a distillation run and a teacher run each accept a
# subset (the plateau protocol drives the student's LR; RepDistiller's recipes the teacher's).
SCHEDULES = ("constant", "plateau", "multistep", "cosine", "onecycle")
STUDENT_SCHEDULES = ("plateau", "cosine")
TEACHER_SCHEDULES = ("multistep", "cosine", "onecycle", "constant")
COMPUTE_DTYPES = ("float32", "bfloat16")
EPOCH_LOOPS = ("auto", "scan", "python")
MEMBER_LOOPS = ("auto", "vmap", "sequential")


def resolve_epoch_loop(loop: str, platform: str) -> str:
    """"auto" -> "python" on CPU (XLA:CPU runs convolution gradients inside a `while` loop many
    times slower than the same step compiled alone), "scan" elsewhere; others checked and kept."""
    if loop not in EPOCH_LOOPS:
        raise ValueError(f"loop={loop!r}; accepted: {', '.join(EPOCH_LOOPS)}")
    if loop == "auto":
        return "python" if platform == "cpu" else "scan"
    return loop
