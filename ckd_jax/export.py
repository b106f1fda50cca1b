"""Export a trained student as one self-describing file, and load it back in three lines.

    from ckd_jax.export import load_exported
    model, variables = load_exported("student.msgpack")
    logits = model.apply(variables, x, train=False)   # x: images normalised as the header says

The file is msgpack (`flax.serialization`) of a dict:

    format      "ckd_jax-export"
    version     1
    header      a JSON string: model, model_kwargs, num_classes (what `create_model` needs),
                input (input_shape, mean, std, eval_crop: how to turn uint8 images into x),
                logit_offset_folded, logit_offset, and where the weights came from
    variables   {"params": ..., "batch_stats": ...} of one network (no member axis)

`export_run(run_dir)` writes the selected student of a finished `experiments/distill.py` run:
the member with the best validation accuracy (or `member=N`), its best-validation weights (the
`best` slot of the run's latest checkpoint, the weights the reported figure is measured on),
and, when the run calibrated (`calibration="table"`), its logit offset folded into the head
bias (`ckd_jax.losses.fold_offset_into_head`), so the exported network's plain logits are the
run's calibrated ones. `experiments/export.py` is its command line.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = "ckd_jax-export"
VERSION = 1

__all__ = ["FORMAT", "VERSION", "export_run", "load_exported", "read_exported",
           "save_exported", "select_member"]


def save_exported(path: str | os.PathLike, *, model: str, model_kwargs: dict, num_classes: int,
                  variables: dict, **header: Any) -> dict:
    """Write `variables` of `create_model(model, num_classes, **model_kwargs)` to `path` with a
    JSON header (the three model fields plus `header`); returns the header."""
    from flax import serialization

    from ckd_jax.files import write_atomic

    head = {"model": model, "model_kwargs": dict(model_kwargs or {}),
            "num_classes": int(num_classes), **header}
    tree = {"format": FORMAT, "version": VERSION, "header": json.dumps(head, sort_keys=True),
            "variables": jax.tree.map(np.asarray, {
                "params": variables["params"],
                "batch_stats": variables.get("batch_stats") or {}})}
    write_atomic(path, serialization.msgpack_serialize(tree))
    return head


def read_exported(path: str | os.PathLike) -> tuple[dict, dict]:
    """(header, variables) of an exported file; one-line ValueError if it is not one."""
    from flax import serialization

    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        tree = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several types on foreign or truncated bytes
        raise ValueError(f"{path} is not a ckd_jax export (cannot be read as msgpack: "
                         f"{type(e).__name__})") from e
    if not isinstance(tree, dict) or tree.get("format") != FORMAT:
        raise ValueError(f"{path} is not a ckd_jax export (no format={FORMAT!r} field)")
    if tree.get("version") != VERSION:
        raise ValueError(f"{path} is a version {tree.get('version')} export; this code reads "
                         f"version {VERSION}")
    variables = dict(tree["variables"])
    if not variables.get("batch_stats"):
        variables.pop("batch_stats", None)
    return json.loads(tree["header"]), variables


def load_exported(path: str | os.PathLike) -> tuple[Any, dict]:
    """(flax module, variables) of an exported file: `module.apply(variables, x, train=False)`
    gives its logits (x normalised with the header's `input` mean and std)."""
    from ckd_jax.models import create_model

    header, variables = read_exported(path)
    module = create_model(header["model"], header["num_classes"], **header["model_kwargs"])
    return module, jax.tree.map(jnp.asarray, variables)


def select_member(summary: dict, member: int | None = None) -> int:
    """The member index to export: `member` if given (checked), else the one with the best
    validation top-1 (`best_val_top1`; the first on ties): selection by validation, as the
    protocol's, never by test accuracy."""
    members = summary.get("members") or []
    if not members:
        raise ValueError("the run's summary.json lists no members")
    if member is not None:
        if not 0 <= member < len(members):
            raise ValueError(f"member={member} is out of range: the run has {len(members)} "
                             f"member(s), 0..{len(members) - 1}")
        return member
    val = [m.get("best_val_top1") for m in members]
    return int(np.argmax([-np.inf if v is None else v for v in val]))


def _run_spec(cfg: dict, dataset: str):
    """The run's preprocessing spec: the config's data_spec if it recorded one, else the
    registered spec of its dataset."""
    from ckd_jax.data import DatasetSpec, dataset_spec

    given = cfg.get("data_spec")
    if given and set(DatasetSpec._fields) <= set(given):
        return DatasetSpec(**{k: (tuple(v) if isinstance(v, list) else v)
                              for k, v in given.items() if k in DatasetSpec._fields})
    return dataset_spec(dataset)


def _input_shape(spec) -> tuple[int, int, int]:
    """(H, W, C) the model takes: the training crop, which the evaluation view equals (the
    engine checks it); one channel per entry of the spec's mean."""
    side = spec.eval_crop or spec.crop_size
    return (int(side), int(side), len(spec.mean))


def export_run(run_dir: str | os.PathLike, member: int | None = None,
               out: str | os.PathLike | None = None) -> tuple[str, dict]:
    """Export the selected student of a finished `distill.py` run dir; returns (path, header).

    The default `out` is `<run_dir>/exported/student_member<i>.msgpack`. Errors (a run that
    is not finished, has no checkpoint, a member out of range) are one line, before anything
    is written.
    """
    from ckd_jax.checkpoint import Checkpointer
    from ckd_jax.files import read_json
    from ckd_jax.losses import fold_offset_into_head

    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    summary = read_json(os.path.join(run_dir, "summary.json"), what="run summary",
                        next_step="export needs a finished distill.py run (rerun it to finish)")
    cfg = read_json(os.path.join(run_dir, "config.json"), what="run config")
    i = select_member(summary, member)
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise FileNotFoundError(f"{run_dir} has no checkpoints/ (a run with "
                                "checkpoint_every=0 keeps no weights to export)")
    with Checkpointer(ckpt_dir, keep_best=False) as ck:
        found = ck.restore_latest()
    if found is None:
        raise FileNotFoundError(f"no checkpoint in {ckpt_dir}")
    step, tree = found
    params, batch_stats, offsets = tree["best"]  # stacked over members [M, ...]
    take = lambda t: jax.tree.map(lambda a: jnp.asarray(a)[i], t)
    variables = {"params": take(params["student"]), "batch_stats": take(batch_stats or {})}
    num_classes = int(np.asarray(offsets).shape[-1])
    model_name, kwargs = cfg["student"], dict(cfg.get("student_kwargs") or {})
    spec = _run_spec(cfg, summary["dataset"])

    from ckd_jax.models import create_model

    model = create_model(model_name, num_classes, **kwargs)
    rec = summary["members"][i]
    calibrated = summary.get("calibration") == "table"
    offset = None
    if calibrated:
        if rec.get("logit_offset") is None:
            raise ValueError(f"{run_dir}: calibration='table' but summary.json has no "
                             f"logit_offset for member {i}")
        offset = np.asarray(rec["logit_offset"], np.float32)
        shape = (2,) + _input_shape(spec)  # two probe inputs, only to locate the head bias
        probe = jnp.linspace(-1.0, 1.0, int(np.prod(shape)), dtype=jnp.float32).reshape(shape)
        variables = fold_offset_into_head(model.apply, variables, jnp.asarray(offset), probe)
    out = os.fspath(out) if out is not None else os.path.join(
        run_dir, "exported", f"student_member{i}.msgpack")
    header = save_exported(
        out, model=model_name, model_kwargs=kwargs, num_classes=num_classes,
        variables=variables,
        input={"input_shape": list(_input_shape(spec)), "mean": list(spec.mean),
               "std": list(spec.std), "eval_crop": spec.eval_crop,
               "how": "x = (uint8_images / 255 - mean) / std, centre-cropped to eval_crop "
                      "when it is set"},
        logit_offset_folded=calibrated,
        logit_offset=None if offset is None else offset.tolist(),
        source={"run_dir": os.path.abspath(run_dir), "member": i, "seed": rec.get("seed"),
                "lr": rec.get("lr"), "checkpoint_step": int(step),
                "best_epoch": rec.get("best_epoch"), "method": summary.get("method"),
                "dataset": summary.get("dataset"), "teacher": summary.get("teacher"),
                "selected_on": rec.get("selected_on"),
                "test_top1_at_best_val": rec.get("test_top1_at_best_val")})
    return out, header
