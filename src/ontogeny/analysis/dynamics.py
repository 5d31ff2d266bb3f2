"""Per-example learning dynamics, vectorised over examples: curves [N, S] at checkpoint steps [S].

- Age of acquisition as Chang et al. 2024 ("Characterizing learning curves during language model
  pre-training", and their released code) define it: fit a sigmoid to each loss curve in log10(step) (step 0
  dropped) and take the step where the fit crosses halfway between the *chance* loss and the *lowest* loss the
  curve reached; a curve whose fit never gets there is clipped to the last step (not acquired), one already
  past it at every checkpoint to the first. `halfway_step` keeps the simpler reading (halfway between the fit's
  own values at the first and last checkpoint); the two agree only when a curve starts at chance and ends at its
  minimum.
- Abruptness: the share of a curve's range covered by its single largest move between two checkpoints.
- Forgetting events (Toneva et al. 2019, "An empirical study of example forgetting"): correct -> incorrect
  flips between consecutive checkpoints.
- Data maps (Swayamdipta et al. 2020, "Dataset cartography"): mean and std over checkpoints of the probability
  of the true label, and the fraction of checkpoints at which the example is correct. The probability is
  exp(-loss) for cross entropy only; for other losses (the hinge) confidence and variability are not defined.

Every function takes an [N, S] array (N curves: examples, or member x example pairs flattened) and returns [N].
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._common import check_curves, check_steps, log_step, step_from_log
from ._sigmoid import fit_sigmoids


def sigmoid_summary(steps, values, *, log_steps: bool = True) -> pd.DataFrame:
    """Least-squares sigmoid of every curve in log10(1 + step) (or step): values [N, S] -> DataFrame [N] with
    `halfway_step` (where the fit is halfway between its first- and last-checkpoint values; NaN if constant),
    `rise_decades` (10%-90% rise width in decades, or in steps if not log_steps), `start`, `end` (fitted
    values at the first and last checkpoint) and `r2` (share of variance explained)."""
    steps = check_steps(steps, min_length=3)
    values = check_curves(values, len(steps))
    x = log_step(steps) if log_steps else steps
    fit = fit_sigmoids(x, values)
    return pd.DataFrame({
        "halfway_step": step_from_log(fit.halfway) if log_steps else fit.halfway,
        "rise_decades": fit.rise,
        "start": fit.start,
        "end": fit.end,
        "r2": fit.r2,
    })


def age_of_acquisition(steps, values, *, increasing: bool | None = None, log_steps: bool = True) -> np.ndarray:
    """Age of acquisition [N] of curves values [N, S]: the step at which a sigmoid fitted in log-step is halfway
    between its fitted values at the first and last checkpoint (Chang & Bergen 2022).

    `increasing` True (correctness) or False (loss) keeps only curves whose fit moves that way, the others get
    NaN (they were not acquired); None accepts both. Constant curves get NaN.
    Method: variable-projection grid search over centre and width, the levels in closed form (`_sigmoid`).
    """
    summary = sigmoid_summary(steps, values, log_steps=log_steps)
    aoa = summary["halfway_step"].to_numpy()
    if increasing is not None:
        moved = summary["end"].to_numpy() - summary["start"].to_numpy()
        aoa = np.where(moved > 0 if increasing else moved < 0, aoa, np.nan)
    return aoa


def chance_aoa(steps, loss, chance, *, proportion: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Age of acquisition of loss curves [N, S] at checkpoint steps [S] as Chang et al. 2024: (aoa_step [N],
    acquired [N]).

    The fit: a least-squares sigmoid in log10(step) over the checkpoints after step 0, its centre free to lie up
    to half a decade outside them (their curve_fit is unconstrained). The threshold: `proportion` of the way from
    `chance` (a float, or [N] per curve; ln C for C classes, 1 for the hinge, ln V per token) to the lowest loss
    reached. AoA is where the fit crosses it; the last step (acquired False) if the fit never gets below it, only
    rises, the curve never beats chance, or the crossing lies after the last checkpoint; the first step if the
    fit is below it everywhere (or crosses before the first checkpoint).
    """
    steps = check_steps(steps, min_length=3)
    loss = check_curves(loss, len(steps), name="loss")
    keep = steps > 0
    x, y = np.log10(steps[keep]), -loss[:, keep]  # increasing is learning, as in their code
    if len(x) < 3:
        raise ValueError("age of acquisition needs at least 3 checkpoints after step 0")
    fit = fit_sigmoids(x, y, centers=np.linspace(x[0] - 0.5, x[-1] + 0.5, 128))
    best, floor = y.max(axis=1), -np.broadcast_to(np.asarray(chance, dtype=float), (len(y),))
    threshold = floor * (1 - proportion) + best * proportion
    start, end = fit.low, fit.low + fit.amplitude  # the fit's two asymptotes, left and right
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = (threshold - start) / (end - start)
        crossing = fit.center + fit.width * np.log(fraction / (1 - fraction))
    never = (threshold >= np.maximum(start, end)) | (floor >= best) | (end < start)
    always = ~never & (threshold <= np.minimum(start, end))
    aoa = np.where(never, x[-1], np.where(always, x[0], crossing))
    # A crossing the fit puts outside the checkpoints is clipped to them (their code returns it as is); one after
    # the last checkpoint was not reached in the run, so it counts as not acquired.
    never |= aoa > x[-1]
    first, last = steps[keep][0], steps[keep][-1]
    return np.where(never, last, np.where(aoa <= x[0], first, 10.0 ** np.clip(aoa, x[0], x[-1]))), ~never


def abruptness(values) -> np.ndarray:
    """Largest absolute change between consecutive checkpoints over the curve's range (max - min), [N, S] -> [N]
    in [0, 1]; 1 means the whole range is crossed in one step, NaN for a constant curve.

    Compare curves recorded at the same checkpoints only: a denser schedule splits a jump into smaller moves.
    For 0/1 correctness every non-constant curve scores 1, so use it on losses or probabilities.
    """
    values = np.atleast_2d(np.asarray(values, dtype=float))
    jumps = np.abs(np.diff(values, axis=1)).max(axis=1)
    spread = values.max(axis=1) - values.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(spread > 0, jumps / np.where(spread > 0, spread, 1.0), np.nan)


def forgetting_events(correct, steps=None) -> pd.DataFrame:
    """Forgetting statistics of correctness curves correct [N, S] (bool), following Toneva et al. (2019) with
    checkpoints in place of minibatch presentations. Returns a DataFrame [N] with `n_forgetting` (correct ->
    incorrect flips), `n_learning` (incorrect -> correct flips), `ever_learned`, `unforgettable` (learned and
    never forgotten; Toneva et al. treat never-learned examples as infinitely forgettable, so they are not
    unforgettable), `final_correct`, and `first_learned_step` (first checkpoint correct, NaN if never; needs
    steps [S], else it is the checkpoint index).
    """
    correct = np.atleast_2d(np.asarray(correct, dtype=bool))
    previous, current = correct[:, :-1], correct[:, 1:]
    n_forgetting = (previous & ~current).sum(axis=1)
    ever = correct.any(axis=1)
    where = np.arange(correct.shape[1]) if steps is None else check_steps(steps, min_length=1)
    if len(where) != correct.shape[1]:
        raise ValueError(f"steps has {len(where)} checkpoints but correct has {correct.shape[1]}")
    first = np.where(ever, np.asarray(where, dtype=float)[correct.argmax(axis=1)], np.nan)
    return pd.DataFrame({
        "n_forgetting": n_forgetting,
        "n_learning": (~previous & current).sum(axis=1),
        "ever_learned": ever,
        "unforgettable": ever & (n_forgetting == 0),
        "final_correct": correct[:, -1],
        "first_learned_step": first,
    })


def cartography(*, loss=None, correct=None, p_true=None, loss_kind: str = "cross_entropy") -> pd.DataFrame:
    """Data-map coordinates per curve (Swayamdipta et al. 2020) over checkpoints, inputs [N, S]: `confidence`
    (mean probability of the true label), `variability` (its standard deviation, ddof=0 as in the paper's code)
    and `correctness` (fraction of checkpoints correct; NaN without `correct`).

    The probability is `p_true` if given, else exp(-loss) for a cross-entropy loss; for any other `loss_kind`
    (the hinge) it is not defined and confidence and variability are NaN.
    """
    if loss_kind != "cross_entropy":
        loss = None
    if p_true is None and loss is not None:
        p_true = np.exp(-np.atleast_2d(np.asarray(loss, dtype=float)))
    if p_true is None and correct is None:
        raise ValueError("cartography needs a cross-entropy loss, p_true or correct")
    n_curves = len(np.atleast_2d(p_true if p_true is not None else correct))
    table = pd.DataFrame(index=pd.RangeIndex(n_curves))
    if p_true is not None:
        p_true = np.atleast_2d(np.asarray(p_true, dtype=float))
        table["confidence"] = p_true.mean(axis=1)
        table["variability"] = p_true.std(axis=1)
    else:
        table["confidence"] = table["variability"] = np.nan
    if correct is not None:
        table["correctness"] = np.atleast_2d(np.asarray(correct, dtype=bool)).mean(axis=1)
    else:
        table["correctness"] = np.nan
    return table


class ExampleDynamics:
    """All per-example dynamics in one table.

    Parameters (stored only): `aoa_from` chooses the curve for age of acquisition and abruptness: "loss",
    "correct" (its error rate 1 - correct, as a loss), or "auto" (loss when given: a continuous curve locates the
    threshold better than 0/1 flips); `chance` is the chance-level loss for `chance_aoa` (ln C for C classes,
    1 for the hinge, ln V per token; None: the mean of the curves at the first checkpoint, the untrained model's
    level); `loss_kind` ("cross_entropy" or "hinge") says whether exp(-loss) is a probability (cartography);
    `log_steps` fits `halfway_step`'s sigmoid in log10(1 + step).

    Fitted: `table_`, a DataFrame with one row per curve (index `index` if given to fit, else 0..N-1 named
    "example"): aoa_step and acquired (`chance_aoa`, Chang et al. 2024), halfway_step (halfway between the
    fitted first and last values; NaN unless the curve moved the learning way), rise_decades (10%-90% width of
    that sigmoid), aoa_r2, abruptness (from the chosen curve); n_forgetting, n_learning, ever_learned,
    unforgettable, final_correct, first_learned_step (when correct is given); confidence, variability,
    correctness (cartography).
    """

    def __init__(self, *, aoa_from: str = "auto", chance: float | None = None, loss_kind: str = "cross_entropy",
                 log_steps: bool = True):
        self.aoa_from = aoa_from
        self.chance = chance
        self.loss_kind = loss_kind
        self.log_steps = log_steps

    def fit(self, steps, loss=None, correct=None, *, index=None) -> ExampleDynamics:
        """steps [S]; loss [N, S] (float) and/or correct [N, S] (bool); index [N] labels the rows."""
        if loss is None and correct is None:
            raise ValueError("ExampleDynamics.fit needs loss, correct or both")
        steps = check_steps(steps, min_length=3)
        loss = None if loss is None else check_curves(loss, len(steps), name="loss")
        correct = None if correct is None else np.atleast_2d(np.asarray(correct, dtype=bool))
        expected = (len(correct), len(steps)) if loss is None else loss.shape
        if correct is not None and correct.shape != expected:
            raise ValueError(f"correct has shape {correct.shape}; expected {expected}")
        source = self.aoa_from
        if source == "auto":
            source = "loss" if loss is not None else "correct"
        if source not in ("loss", "correct") or (loss if source == "loss" else correct) is None:
            raise ValueError(f"aoa_from={self.aoa_from!r} needs that curve to be passed to fit")
        curve = loss if source == "loss" else 1.0 - correct  # [N, S], lower is better either way
        chance = self.chance if source == "loss" and self.chance is not None else float(curve[:, 0].mean())

        if (steps > 0).sum() >= 3:
            aoa, acquired = chance_aoa(steps, curve, chance)
        else:  # too few checkpoints after step 0 for a fit in log10(step)
            aoa, acquired = np.full(len(curve), np.nan), np.zeros(len(curve), dtype=bool)
        summary = sigmoid_summary(steps, curve, log_steps=self.log_steps)
        moved = summary["end"] - summary["start"]
        table = pd.DataFrame({
            "aoa_step": aoa,
            "acquired": acquired,
            "halfway_step": summary["halfway_step"].where(moved < 0),  # learning lowers the curve
            "rise_decades": summary["rise_decades"],
            "aoa_r2": summary["r2"],
            "abruptness": abruptness(curve),
        })
        if correct is not None:
            table = table.join(forgetting_events(correct, steps))
        table = table.join(cartography(loss=loss, correct=correct, loss_kind=self.loss_kind))
        if index is None:
            index = pd.RangeIndex(len(table), name="example")
        table.index = index
        self.table_ = table
        return self
