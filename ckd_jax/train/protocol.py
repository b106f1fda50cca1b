"""The paper's early-stopping protocol, per population member, on the host.

The paper's protocol (docs/method.md): after every pseudo-epoch evaluate validation accuracy;
on a strict improvement keep the weights and record the test accuracy; after `patience`
pseudo-epochs without improvement reload the best weights and divide the learning rate by 10;
stop at the `max_plateaus`-th such plateau (the paper: the third) or after `max_epochs`
pseudo-epochs. The reported number is the test accuracy at the best validation point; the last
epoch's test accuracy is recorded too, so the protocol is never ambiguous.

`schedule="cosine"` is the fixed-length option: no reloads, stop after `epochs`, the learning
rate follows a cosine inside the compiled step; best-validation and last values are both kept.

`PlateauProtocol` holds only NumPy arrays (one entry per member) so it is cheap to checkpoint
(`state_dict` / `from_state_dict`) and easy to test on scripted accuracy sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class EpochDecision:
    """What the trainer must do after an epoch, per member (bool arrays [M])."""

    improved: np.ndarray  # copy current weights into the best-weights slot
    reload: np.ndarray  # load the best weights back and divide the learning rate by 10
    stopped: np.ndarray  # member is finished (after this epoch)


class PlateauProtocol:
    """Vectorised bookkeeping of the protocol for M members."""

    FIELDS = ("epoch", "best_val", "best_val5", "best_test", "best_test5", "best_epoch",
              "since_best", "plateaus", "active", "last_val", "last_test", "last_test5",
              "lr_scale", "epochs_run")

    def __init__(self, num_members: int, *, schedule: str = "plateau", patience: int = 50,
                 max_plateaus: int = 3, max_epochs: int = 1000, epochs: int | None = None):
        if schedule not in ("plateau", "cosine"):
            raise ValueError(f"schedule={schedule!r}; accepted: plateau, cosine")
        self.schedule = schedule
        self.patience = patience
        self.max_plateaus = max_plateaus
        self.max_epochs = epochs if schedule == "cosine" else max_epochs
        m = num_members
        self.epoch = 0
        self.best_val = np.full(m, -np.inf)
        self.best_val5 = np.full(m, -np.inf)
        self.best_test = np.full(m, np.nan)
        self.best_test5 = np.full(m, np.nan)
        self.best_epoch = np.full(m, -1)
        self.since_best = np.zeros(m, np.int64)
        self.plateaus = np.zeros(m, np.int64)
        self.active = np.ones(m, bool)
        self.last_val = np.full(m, np.nan)
        self.last_test = np.full(m, np.nan)
        self.last_test5 = np.full(m, np.nan)
        self.lr_scale = np.ones(m)  # product of the /10 drops so far
        self.epochs_run = np.zeros(m, np.int64)

    @property
    def done(self) -> bool:
        return not self.active.any()

    def update(self, val: np.ndarray, test: np.ndarray | None = None,
               test5: np.ndarray | None = None,
               val5: np.ndarray | None = None) -> EpochDecision:
        """Record one pseudo-epoch's accuracies ([M] each) and decide the next actions.

        Only validation accuracy decides. Test accuracy is optional (recorded when given): the
        training engine measures it once, on the best weights, at the end of a run.

        Members already stopped are ignored (their decision entries are all False).
        """
        val = np.asarray(val, float)
        test = np.full_like(val, np.nan) if test is None else np.asarray(test, float)
        test5 = np.full_like(test, np.nan) if test5 is None else np.asarray(test5, float)
        val5 = np.full_like(val, np.nan) if val5 is None else np.asarray(val5, float)
        act = self.active.copy()
        self.epoch += 1
        self.epochs_run = self.epochs_run + act
        self.last_val = np.where(act, val, self.last_val)
        self.last_test = np.where(act, test, self.last_test)
        self.last_test5 = np.where(act, test5, self.last_test5)

        improved = act & (val > self.best_val)
        self.best_val = np.where(improved, val, self.best_val)
        self.best_val5 = np.where(improved, val5, self.best_val5)
        self.best_test = np.where(improved, test, self.best_test)
        self.best_test5 = np.where(improved, test5, self.best_test5)
        self.best_epoch = np.where(improved, self.epoch, self.best_epoch)
        self.since_best = np.where(improved, 0, self.since_best + act)

        reload = np.zeros_like(act)
        stopped = np.zeros_like(act)
        if self.schedule == "plateau":
            plateau = act & (self.since_best >= self.patience)
            self.plateaus = self.plateaus + plateau
            final = plateau & (self.plateaus >= self.max_plateaus)
            reload = plateau & ~final
            stopped = final
            self.since_best = np.where(plateau, 0, self.since_best)
            self.lr_scale = np.where(reload, self.lr_scale * 0.1, self.lr_scale)
        if self.epoch >= self.max_epochs:
            stopped = stopped | act
            reload = reload & ~stopped
        self.active = act & ~stopped
        return EpochDecision(improved=improved, reload=reload, stopped=stopped)

    def state_dict(self) -> dict:
        d = {name: np.asarray(getattr(self, name)) for name in self.FIELDS}
        d["epoch"] = np.asarray(self.epoch)
        return d

    def load_state_dict(self, d: dict) -> None:
        for name in self.FIELDS:
            value = np.asarray(d[name])
            setattr(self, name, int(value) if name == "epoch" else value.copy())

    def summary(self, member: int) -> dict:
        """Results of one member as plain Python numbers (JSON-ready)."""
        f = lambda a: None if not np.isfinite(a[member]) else float(a[member])
        return {
            "test_top1_at_best_val": f(self.best_test),
            "test_top5_at_best_val": f(self.best_test5),
            "best_val_top1": f(self.best_val),
            "best_epoch": int(self.best_epoch[member]),
            "last_test_top1": f(self.last_test),
            "last_test_top5": f(self.last_test5),
            "last_val_top1": f(self.last_val),
            "plateaus": int(self.plateaus[member]),
            "epochs_run": int(self.epochs_run[member]),
        }
