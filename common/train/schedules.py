"""Learning-rate schedules and early stopping with resumable state.

Every object has ``state_dict()`` / ``load_state_dict()`` returning plain JSON-able
dicts, so a checkpoint's ``extra`` can carry them and a resumed run continues exactly.
"""
import math


class ReduceLROnPlateau:
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without an
    improvement of the monitored value (lower is better), never below ``min_lr``."""

    def __init__(self, lr, factor=0.3, patience=80, min_lr=0.0, threshold=0.0):
        self.lr = float(lr)
        self.factor = float(factor)
        self.patience = int(patience)
        self.min_lr = float(min_lr)
        self.threshold = float(threshold)
        self.best = math.inf
        self.bad_epochs = 0

    def step(self, value):
        """Record one epoch's value; return the learning rate for the next epoch."""
        if value < self.best - self.threshold:
            self.best = float(value)
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                self.lr = max(self.lr * self.factor, self.min_lr)
                self.bad_epochs = 0
        return self.lr

    def state_dict(self):
        return {"lr": self.lr, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state):
        self.lr = float(state["lr"])
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])


class EarlyStopping:
    """Stop after ``patience`` consecutive epochs without improvement (lower is better);
    a NaN value stops at once. ``patience <= 0`` never stops."""

    def __init__(self, patience=140, min_delta=0.0):
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.best = math.inf
        self.bad_epochs = 0

    def step(self, value):
        """Record one epoch's value; return ``(improved, stop)``."""
        if math.isnan(value):
            return False, True
        improved = value < self.best - self.min_delta
        if improved:
            self.best = float(value)
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return improved, 0 < self.patience <= self.bad_epochs

    def state_dict(self):
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state):
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])


def step_lr(base_lr, epoch, milestones, gamma=0.1):
    """``base_lr * gamma ** (number of milestones <= epoch)`` (e.g. /10 at 80 and 120)."""
    return base_lr * gamma ** sum(1 for m in milestones if epoch >= m)


def poly_lr(base_lr, iteration, max_iter, power=0.9, min_lr=0.0):
    """Polynomial decay ``base_lr * (1 - it / max_iter) ** power``, floored at ``min_lr``."""
    frac = min(max(iteration, 0), max_iter) / float(max_iter)
    return max(base_lr * (1.0 - frac) ** power, min_lr)
