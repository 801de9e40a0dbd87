"""What a run shows on the terminal while it trains: its headline metrics every log.

On a terminal, a progress bar redrawn in place with the headline metrics as its postfix; in a
pipe or a file (``raybm train ... > log 2>&1``, CI, ``ray job submit``, a Ray worker whose
output Ray forwards) one ``update N/M name=value ...`` line per ``train.log_every`` updates,
never carriage-return redraws.

The headline is chosen from what the run logs, by metric name, in :data:`HEADLINE` order: the
figure a user of each kind of run watches (test accuracy with labels, an exact or Jarzynski
test log-likelihood, a mixture's mode weights), then the estimator's own signals (ESS, the
losses), then the kernel's (acceptance, step size). A method that reports new metrics shows
them here once their names are added to that list, without a branch on its name.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

# Patterns in the order they are shown; at most MAX_SHOWN values in all.
HEADLINE = (
    r"test_accuracy", r"test_loglik_exact", r"test_loglik_grid", r"test_loglik_jarzynski",
    r"mode_weight_\d+", r"ess", r"loss_\w+", r"acceptance", r"step_size",
)
MAX_SHOWN = 6


def headline(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics a progress display shows, in :data:`HEADLINE` order."""
    shown: dict[str, float] = {}
    for pattern in HEADLINE:
        for name in sorted(k for k in metrics if re.fullmatch(pattern, k)):
            if len(shown) < MAX_SHOWN:
                shown[name] = metrics[name]
    return shown


def _values(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items())


class Progress:
    """A run's progress on ``stream`` (stderr): a bar on a terminal, lines elsewhere.

    ``update(step)`` after every update; ``log(step, metrics)`` at each log step, with what
    the run logged there; ``close()`` at the end.
    """

    def __init__(self, total: int, initial: int, stream: TextIO | None = None,
                 bar: bool | None = None) -> None:
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        if bar is None:
            bar = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="upd", dynamic_ncols=True,
                             file=self.stream)

    def update(self, step: int) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        shown = headline(metrics)
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()})
            return
        rate = metrics.get("updates_per_s")
        tail = "" if rate is None else f" ({rate:.3g} updates/s)"
        # Written, not print()ed: Ray Train patches print on its workers to log *and* echo.
        self.stream.write(f"update {step}/{self.total} {_values(shown)}{tail}\n")
        self.stream.flush()

    def warn(self, step: int, message: str) -> None:
        """A line of what the run found wrong at ``step`` (an estimator's alarm)."""
        line = f"update {step}/{self.total} warning: {message}"
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
            return
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
