"""What ``tuner.tune`` decides about a study before any trial: the direction a metric's name reads as, and its
defaults (which a report's follow-up call leaves out); light, so that reading a study needs no PyTorch."""

from __future__ import annotations

import re

__all__ = ["TUNE_DEFAULTS", "TUNE_N_TRIALS", "resolve_direction"]

#: ``tuner.tune``'s defaults for the settings a study is tuned with (a test checks them against its signature)
TUNE_DEFAULTS = {"metric": "value", "direction": "auto", "epochs": 10, "seed": 0, "sampler": "tpe",
                 "pruner": "median", "objectives": None}
TUNE_N_TRIALS = 30  # its trial budget (a budget is no setting the study is tuned with: a resumed call raises it)


# Names that read as something to make smaller: whole words, and words a name glues together ("logloss",
# "valLoss", "crossentropy", "train_seconds").
_LOSS_WORDS = {"err", "mse", "mae", "rmse", "nll", "perplexity", "ppl", "wer", "cer", "mape", "smape", "bce", "brier",
               "huber", "regret", "cost", "latency", "seconds", "secs", "time", "kl", "divergence", "distance",
               "bpd", "bpc", "fid", "crossentropy", "drop", "gap", "degradation"}
# ... and names that read as a score, to make larger.
_SCORE_WORDS = {"accuracy", "acc", "auc", "auroc", "aupr", "f1", "r2", "precision", "recall", "score", "reward",
                "return", "iou", "miou", "map", "bleu", "rouge", "ndcg", "mrr", "top1", "top5", "dice", "psnr",
                "ssim", "kappa", "mcc", "likelihood", "elbo", "hit", "hits", "sharpe", "win"}
# Words that make a loss word a benefit ("cost_savings", "time_saved", "brier_skill_score"): the name reads as
# both, and nothing is guessed in silence.
_BENEFIT_WORDS = {"saved", "saving", "savings", "skill", "gain", "gains", "reduction", "speedup", "improvement"}
_NEGATIONS = ("neg", "negative", "minus")


def _metric_words(metric: str) -> set[str]:
    """The words of a metric's name, split at non-letters and at camelCase (``valLoss``: val, loss), and also
    as written (``mAP``: map), with "cross entropy" read as one word."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", metric)
    split = [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]
    whole = [w for w in re.split(r"[^a-z0-9]+", metric.lower()) if w]
    words = set(split) | set(whole)
    if any(a == "cross" and b == "entropy" for seq in (split, whole) for a, b in zip(seq, seq[1:], strict=False)):
        words.add("crossentropy")
    return words


def _reads_as_loss(word: str) -> bool:
    return (word in _LOSS_WORDS or "error" in word or "crossentropy" in word
            or (word.endswith("loss") or word.startswith("loss") or word == "losses") and word != "lossless")


def resolve_direction(metric: str, direction: str) -> tuple[str, str, bool]:
    """``direction="auto"``: the registry's direction for a known metric (``mse``, ``accuracy``, ...), minimize
    for a name that reads as a loss, an error or a cost (``val_loss``, ``valLoss``, ``logloss``, ``top1_error``,
    ``cross_entropy``, ``mae``, ``train_seconds``) or as a negated score (``neg_log_likelihood``), maximize for
    one that reads as a score (``f1``, ``val_auc``, ``mAP``), as a negated loss (``neg_mse``), or for the
    default name ``value``; and a note saying so (empty when the direction was given). A name that reads as
    neither, or as both (``cost_savings``), is maximized with a note asking for ``direction=``. The third
    value says whether the direction is a guess worth a warning when nothing is printed: a minimized name, or
    one that read as neither or both."""
    if direction != "auto":
        return direction, "", False
    from tuner.objectives import get_metric, list_metrics

    if isinstance(metric, str) and metric in list_metrics():
        found = get_metric(metric).direction
        return found, f"{found} (the {metric!r} metric's direction)", False
    if metric == "value":
        return ("maximize", "maximize (the default; pass direction='minimize' if train returns a loss or an error)",
                False)
    words = _metric_words(metric) if isinstance(metric, str) else set()
    negated = bool(words & set(_NEGATIONS)) or (isinstance(metric, str) and re.match(r"\s*(-|1\s*-)", metric)
                                                is not None)  # "-acc", "1-acc": a score turned around
    lossy = any(_reads_as_loss(w) for w in words)
    scored = bool(words & _SCORE_WORDS)
    if lossy and words & _BENEFIT_WORDS:
        return "maximize", (f"maximize ({metric!r} reads as both a cost and a benefit; pass direction='minimize' if "
                            f"smaller is better)"), True
    if lossy != negated and (lossy or scored):  # a loss, or a negated score
        return ("minimize", f"minimize ({metric!r} reads as a loss; pass direction='maximize' if larger is better)",
                True)
    if scored or lossy:  # a score, or a negated loss
        return ("maximize", f"maximize ({metric!r} reads as a score; pass direction='minimize' if smaller is better)",
                False)
    return "maximize", (f"maximize ({metric!r} reads as neither a loss nor a score; pass direction='minimize' if "
                        f"smaller is better)"), True
