"""A signature of the rule from in-distribution data only: a ridge probe for "main-clause auxiliary" on
the final residual stream at the two auxiliaries of declaratives with a subject relative clause (`probe_accuracy`,
`member_states`), and how well it predicts each member's rule (`signature_prediction`: Spearman correlation and AUC
with CIs over members). In the question-formation grammar the word position alone decides main vs embedded, so that
probe is passed by position (1.0 at random init); the transfer probe (`transfer_rows`: fit on depth-1 sentences,
scored at the unseen positions of center-embedded ones) is the one position alone cannot pass (0.5).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata, spearmanr
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..tasks.rule_score import HIERARCHICAL_LABEL_SHARE
from .bootstrap import multibootstrap


def probe_accuracy(features, labels, sentences, *, alpha: float = 1.0, random_state=None) -> float:
    """Held-out accuracy of a ridge-regression probe of `labels` [N] (0/1) from `features` [N, d]: fit on the rows
    of a random half of the `sentences` [N] (ids; a sentence's rows stay on one side, so its two auxiliaries never
    straddle the split), scored on the other half; prediction 1 where the fit is >= 0.5.

    Ridge on standardized features (the fit's own mean and scale). NaN with fewer than 2 sentences."""
    features, labels = np.asarray(features, dtype=float), np.asarray(labels, dtype=float)
    sentences = np.asarray(sentences)
    if features.ndim != 2 or labels.shape != (len(features),) or sentences.shape != labels.shape:
        raise ValueError(f"need features [N, d], labels [N], sentences [N] (got {features.shape}, {labels.shape}, "
                         f"{sentences.shape})")
    ids = np.unique(sentences)
    if len(ids) < 2:
        return float("nan")
    rng = np.random.default_rng(random_state)
    fit = np.isin(sentences, rng.permutation(ids)[: len(ids) // 2])
    return fit_and_score(features[fit], labels[fit], features[~fit], labels[~fit], alpha=alpha)


def fit_and_score(fit_features, fit_labels, score_features, score_labels, *, alpha: float = 1.0) -> float:
    """Accuracy on the score rows of a ridge probe fit on the fit rows (scikit-learn's ridge with an unpenalized
    intercept, features standardized with the fit rows' mean and scale; prediction 1 where the fit is >= 0.5)."""
    probe = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(fit_features, fit_labels)
    predicted = probe.predict(np.asarray(score_features, dtype=float)) >= 0.5
    return float(np.mean(predicted == (np.asarray(score_labels) >= 0.5)))


def auxiliary_rows(examples) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The probe's rows in questions_gen `Examples`: the declaratives (kind decl) with a subject relative clause,
    two rows each, (sentence index [R], x position of the auxiliary [R] (word i sits at tokens i + 1, and
    x = tokens[:, :-1] keeps that place), label [R]: 1 main-clause auxiliary, 0 the first (embedded) one,
    word position [R])."""
    chosen = np.flatnonzero((examples.kind == "decl") & examples.subject_rc)
    sentence = np.repeat(chosen, 2)
    words = np.stack([examples.first_aux_position[chosen], examples.main_aux_position[chosen]], 1).ravel()
    label = np.tile([0, 1], len(chosen))
    return sentence, words + 1, label, words


def transfer_rows(examples, first_auxiliary: int, n_auxiliaries: int) -> tuple[np.ndarray, ...]:
    """Rows for a probe that position alone cannot pass: (sentence [R], x position [R], label [R], fit [R] bool).
    Fit rows: the two auxiliaries of declaratives with a depth-1 subject relative clause (embedded 0, main 1).
    Score rows: in center-embedded declaratives, the auxiliary of the inner relative clause (0) and the main one
    (1), which sit at word positions no fit row has (in this grammar the position decides the label within each
    depth, so the plain probe of `auxiliary_rows` is passed by position alone). Empty where the member's
    distribution has no center-embedded declaratives (complexity 0)."""
    decl = examples.kind == "decl"
    shallow = np.flatnonzero(decl & examples.subject_rc & ~examples.center_embedded)
    deep = np.flatnonzero(decl & examples.center_embedded)
    if not len(shallow) or not len(deep):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, np.zeros(0, dtype=bool)
    words = examples.tokens[:, 1:]  # [N, L-1]: word i of the declarative at column i
    is_aux = (words >= first_auxiliary) & (words < first_auxiliary + n_auxiliaries)
    column = np.arange(words.shape[1])
    between = (column > examples.first_aux_position[:, None]) & (column < examples.main_aux_position[:, None])
    inner = np.argmax(is_aux & between, axis=1)  # [N]: the auxiliary between the first and the main one
    sentence = np.r_[np.repeat(shallow, 2), np.repeat(deep, 2)]
    word = np.r_[np.stack([examples.first_aux_position[shallow], examples.main_aux_position[shallow]], 1).ravel(),
                 np.stack([inner[deep], examples.main_aux_position[deep]], 1).ravel()]
    label = np.tile([0, 1], len(shallow) + len(deep))
    return sentence, word + 1, label, np.r_[np.ones(2 * len(shallow), bool), np.zeros(2 * len(deep), bool)]


def member_states(model, x, positions) -> np.ndarray:
    """The final residual stream (after the final LayerNorm, if the model has one) of every member at given
    positions: x [B, T] int64 token ids, positions [R] pairs of (row of x, position) as [R, 2] -> [M, R, d]."""
    import torch

    with torch.no_grad():
        resid = model.read(torch.as_tensor(x), ["resid_final"])["resid_final"]  # [M, B, T, d]
        rows, columns = (torch.as_tensor(np.asarray(positions)[:, i]) for i in (0, 1))
        return resid[:, rows, columns].double().cpu().numpy()  # [M, R, d]


SIGNATURE_COLUMNS = ["member", "step", "n_sentences", "probe_accuracy", "position_accuracy", "n_deep_sentences",
                     "transfer_accuracy"]


def run_signature(run, *, alpha: float = 1.0, random_state: int = 0) -> pd.DataFrame:
    """The probe signature of every member at every step with saved weights (SIGNATURE_COLUMNS):
    - probe_accuracy: ridge probe, main vs embedded auxiliary, on the final residual stream (`auxiliary_rows`,
      held-out half of the sentences), over n_sentences declaratives with a subject relative clause (NaN with
      fewer than 2, e.g. at subject_rc 0);
    - position_accuracy: the same probe on a one-hot of the word position alone (in this grammar it is 1: the
      baseline that probe_accuracy cannot beat);
    - transfer_accuracy: fit on depth-1 sentences, scored on the inner and main auxiliaries of n_deep_sentences
      center-embedded ones (`transfer_rows`; position alone scores 0.5 there); NaN without center-embedded
      declaratives in the member's distribution.
    The sentences are each member's own test distribution (questions_gen.sample(grammar, "test", n_test,
    split_seed), as the task builds its test split), never the gen set. Only models with the site `resid_final`
    (transformers) are probed."""
    from ..rebuild import run_ensembles

    spec, rows = run.spec, []
    if spec.task.name != "question_formation":
        raise ValueError(f"the signature probes question_formation runs (this run's task is {spec.task.name!r})")
    if spec.task.kind != "question":
        raise ValueError(f"the signature probes auxiliaries: question_formation runs with task.kind = question (this "
                         f"run's kind is {spec.task.kind!r})")
    for ensemble in run_ensembles(run):
        group, model = ensemble.members, ensemble.model
        if "resid_final" not in getattr(model, "site_names", list)():
            raise ValueError(f"the signature reads a transformer's residual stream (site resid_final), which model "
                             f"{spec.model.name!r} does not have")
        data = {config: _signature_rows(config) for config in dict.fromkeys(m.spec.task for m in group)}
        for step in ensemble.saved_steps():
            ensemble.load(step)
            model.eval()
            for config, (x, plain, transfer) in data.items():
                states = (member_states(model, x, np.r_[plain["where"], transfer["where"]]) if len(x)  # [M, R, d]
                          else np.empty((len(group), 0, 0)))  # subject_rc 0: no sentence to probe, NaN rows
                n_plain = len(plain["where"])
                for index, m in enumerate(group):
                    if m.spec.task == config:
                        rows.append({"member": m.member, "step": int(step),
                                     **_signature(states[index, :n_plain], states[index, n_plain:], plain, transfer,
                                                  alpha, random_state)})
    return pd.DataFrame(rows, columns=SIGNATURE_COLUMNS)


def _signature_rows(config) -> tuple[np.ndarray, dict, dict]:
    """One task config's probe rows: (x [B, T] of the sentences used, plain rows, transfer rows), each rows dict
    with where [R, 2] (row of x, position), label [R], sentence [R] and words [R] or fit [R]."""
    from ..tasks.questions_gen import sample

    grammar = config.grammar()
    examples = sample(grammar, "test", config.n_test, config.split_seed)
    sentence, position, label, words = auxiliary_rows(examples)
    deep_sentence, deep_position, deep_label, fit = transfer_rows(examples, grammar.first_auxiliary,
                                                                  grammar.n_auxiliary_tokens)
    kept, row = np.unique(np.r_[sentence, deep_sentence], return_inverse=True)
    plain = {"where": np.stack([row[:len(sentence)], position], 1), "label": label, "sentence": sentence,
             "words": words}
    transfer = {"where": np.stack([row[len(sentence):], deep_position], 1).reshape(-1, 2), "label": deep_label,
                "sentence": deep_sentence, "fit": fit}
    return examples.tokens[kept, :-1], plain, transfer


def _signature(states: np.ndarray, deep_states: np.ndarray, plain: dict, transfer: dict, alpha: float,
               random_state) -> dict:
    """One member's signature columns from its states at the plain rows [R, d] and at the transfer rows [R', d]."""
    n = len(np.unique(plain["sentence"]))
    accuracy = baseline = transfer_accuracy = np.nan
    if n >= 2:
        onehot = np.eye(int(plain["words"].max()) + 1)[plain["words"]]  # [R, positions]
        accuracy = probe_accuracy(states, plain["label"], plain["sentence"], alpha=alpha, random_state=random_state)
        baseline = probe_accuracy(onehot, plain["label"], plain["sentence"], alpha=alpha, random_state=random_state)
    fit = transfer["fit"]
    if fit.any() and (~fit).any():
        transfer_accuracy = fit_and_score(deep_states[fit], transfer["label"][fit], deep_states[~fit],
                                          transfer["label"][~fit], alpha=alpha)
    return {"n_sentences": n, "probe_accuracy": accuracy, "position_accuracy": baseline,
            "n_deep_sentences": len(np.unique(transfer["sentence"][~fit])), "transfer_accuracy": transfer_accuracy}


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve, as the Mann-Whitney probability that a positive outscores a negative (ties 1/2):
    equal to scikit-learn's roc_auc_score (tested) at a tenth of its cost, which counts in 2,000 bootstrap draws."""
    ranks = rankdata(scores)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # undefined; scipy would warn and give NaN
        return float("nan")
    return float(spearmanr(a, b).statistic)


def signature_prediction(signature, hierarchical_share, *, n_boot: int = 2000, ci: float = 0.95,
                         random_state=None) -> dict:
    """How well a per-member signature [n] predicts the rule: Spearman correlation with the final hierarchical
    share [n] and the AUC of the signature for the label hierarchical (share >= 0.8) vs not, each with a
    Multi-Bootstrap percentile CI over members (the same resampled members for both arrays; draws where the
    statistic is undefined, e.g. one class only, are left out of the interval). Returns {n_members, n_hierarchical,
    spearman, spearman_low, spearman_high, auc, auc_low, auc_high}."""
    signature = np.asarray(signature, dtype=float)
    share = np.asarray(hierarchical_share, dtype=float)
    if signature.shape != share.shape or signature.ndim != 1:
        raise ValueError(f"need signature [n] and hierarchical_share [n] (got {signature.shape}, {share.shape})")
    keep = np.isfinite(signature) & np.isfinite(share)
    signature, share = signature[keep], share[keep]
    positive = share >= HIERARCHICAL_LABEL_SHARE
    statistics = {"spearman": lambda i: _spearman(signature[i], share[i]),
                  "auc": lambda i: _auc(signature[i], positive[i])}
    out = {"n_members": len(signature), "n_hierarchical": int(positive.sum())}
    for name, statistic in statistics.items():

        def per_draw(indices, axis=-1, statistic=statistic):  # members are resampled as indices into both arrays
            indices = np.asarray(indices).astype(np.int64)
            if indices.ndim == 1:
                return statistic(indices)
            return np.array([statistic(row) for row in indices])

        estimate = low = high = float("nan")
        if len(signature) >= 2:
            draws = multibootstrap(np.arange(len(signature)), statistic=per_draw, n_boot=n_boot, ci=ci,
                                   random_state=random_state)
            estimate = draws.estimate
            finite = draws.distribution[np.isfinite(draws.distribution)]
            if len(finite):
                low, high = (float(q) for q in np.quantile(finite, [(1 - ci) / 2, (1 + ci) / 2]))
        out |= {name: estimate, f"{name}_low": low, f"{name}_high": high}
    return out
