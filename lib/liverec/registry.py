"""The MLflow model registry, for every model liverec registers: champion lookup, registration, version tags,
alias moves and the ranker's promotion decision. The one module that talks to the registry.

The gate: on the validation users of the newest examples (every candidate of each), a new ranker version's
top N must beat the best baseline's top N (EASE's and ALS's own lists) and the current champion's (re-scored
on the same rows) to take the champion alias. A champion that no longer beats the best baseline loses the
alias: the nightly job then publishes that baseline, never worse. With ``feedback.ope_gate`` on, a version must
also pass the off-policy check on the logged online answers (``ope_verdict``): the lower bound of its estimated
clicks per list above what the champion's answers got.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from liverec.errors import InputError

BASELINES = ("ease", "als")  # the baselines the gate measures (their rank columns in the validation rows)
BEST_BASELINE_TAG = "best_baseline"  # registered-model tag: the baseline the last gate measured best
PROMOTION_TAG = "promotion"  # model-version tag: the gate's reason
# model-version tags of a ranker trained with DP-SGD (ranker.privacy): the epsilon it spent and its delta
PRIVACY_TAGS = ("privacy.epsilon", "privacy.delta")
RANKED_PREFIX = "ranker:"  # how gold.recommendations.model_version starts on the rows a ranker ranked


@dataclass(frozen=True)
class Champion:
    name: str
    version: str
    run_id: str
    uri: str

    @property
    def tag(self) -> str:
        """The model_version written on every row it ranked."""
        return f"{RANKED_PREFIX}{self.name}/{self.version}"


def _client() -> Any:
    import mlflow

    return mlflow.MlflowClient()


def champion(name: str, alias: str) -> Champion | None:
    """The registry's ``name@alias`` version, or None when there is none (or no such model)."""
    import mlflow

    try:
        mv = _client().get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None
    return Champion(name, str(mv.version), mv.run_id, f"models:/{name}@{alias}")


def registered_tag(name: str, tag: str) -> str | None:
    """A tag of the registered model ``name`` (None when the model or the tag does not exist)."""
    import mlflow

    try:
        return _client().get_registered_model(name).tags.get(tag)
    except mlflow.exceptions.MlflowException:
        return None


def register(model_uri: str, name: str, tags: dict[str, Any] | None = None) -> str:
    """Register ``model_uri`` as a new version of ``name`` with ``tags``; its version."""
    import mlflow

    version = str(mlflow.register_model(model_uri, name).version)
    tag_version(name, version, tags or {})
    return version


def tag_version(name: str, version: str, tags: dict[str, Any]) -> None:
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


RETRAIN_TAG = "liverec.retrain_required"  # on a model version trained on data someone asked to be forgotten


def mark_for_retraining(names: tuple[str, ...], reason: str) -> int:
    """Tag every version of the registered models ``names`` (those that exist) with RETRAIN_TAG = ``reason``: they
    were trained on data that has since been deleted. Returns the versions tagged."""
    client = _client()
    tagged = 0
    for name in names:
        for version in client.search_model_versions(f"name='{name}'"):
            client.set_model_version_tag(name, version.version, RETRAIN_TAG, reason)
            tagged += 1
    return tagged


def move_alias(name: str, alias: str, version: str) -> None:
    _client().set_registered_model_alias(name, alias, version)


def version_to_judge(name: str, wanted: str | None) -> Any:
    """The registered version ``wanted`` of ``name`` (default: the newest), as MLflow's ModelVersion."""
    versions = _client().search_model_versions(f"name='{name}'")
    if not versions:
        raise InputError(f"no version of {name} is registered: run train_ranker first")
    if wanted is None:
        return max(versions, key=lambda v: int(v.version))
    found = [v for v in versions if str(v.version) == str(wanted)]
    if not found:
        raise InputError(f"{name} has no version {wanted} (newest: {max(int(v.version) for v in versions)})")
    return found[0]


def run_params(run_id: str) -> dict[str, str]:
    """The params of the MLflow run that logged a version."""
    return dict(_client().get_run(run_id).data.params)


def ope_verdict(ope: dict[str, Any] | None) -> tuple[bool, str]:
    """(does the off-policy check let the version through, what the reason adds) for ``ope``, the answer of
    ``liverec.stages.feedback.ope_check`` (None: the check is off). Not applied (too little logged): through."""
    if ope is None:
        return True, ""
    if not ope.get("applied"):
        return True, f"; off-policy check not applied: {ope.get('reason')}"
    bound = (f"{ope['confidence']:.0%} lower bound {ope['ci_low']:.4f} of its estimated clicks per list "
             f"({ope['estimate']:.4f}, {ope['lists']} logged answers)")
    if ope["passed"]:
        return True, f"; off-policy: {bound} above the logged {ope['logged']:.4f}"
    return False, f"; off-policy check refuses it: {bound} not above the logged {ope['logged']:.4f}"


def promote(name: str, alias: str, version: str, valid_rows: pd.DataFrame, new_scores: np.ndarray, n: int,
            ope: dict[str, Any] | None = None) -> dict[str, Any]:
    """The promotion gate for ``version`` (its ``new_scores`` of ``valid_rows``); moves or removes ``alias``,
    tags the best baseline and returns the decision (``promoted``, ``reason``, the NDCG@n of each side). ``ope``:
    the off-policy check's answer (``feedback.ope_gate``), which can refuse a version that beats them all."""
    import mlflow

    from liverec.metrics import list_quality, top_n_ndcg
    from liverec.ranker.pyfunc import score_examples

    client = _client()
    quality = list_quality(valid_rows, new_scores, n, BASELINES)
    baselines = {k: v for k, v in quality.items() if k != "ranker"}
    best = max(baselines, key=baselines.get) if baselines else None
    floor = baselines[best] if best else -1.0
    new = quality["ranker"]
    decision: dict[str, Any] = {"new_version": version, f"new_ndcg_at_{n}": new, "best_baseline": best,
                                f"best_baseline_ndcg_at_{n}": floor if best else None,
                                **{f"{k}_ndcg_at_{n}": v for k, v in baselines.items()}}
    try:
        holder = client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        holder = None
    old = None
    if holder is not None and str(holder.version) != str(version):
        try:
            model = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
            old = top_n_ndcg(valid_rows, score_examples(model, valid_rows), n)
        except (ValueError, KeyError, mlflow.exceptions.MlflowException) as err:
            # e.g. the feature set changed since the champion was trained: it cannot score today's inputs, so it
            # could not serve them either
            decision["champion_error"] = str(err)
    decision.update(champion_version=holder.version if holder else None, **{f"champion_ndcg_at_{n}": old})
    beats_baseline = new > floor
    if not beats_baseline:
        reason = f"does not beat the best baseline {best}: {new:.4f} vs {floor:.4f}"
    elif old is not None and new <= old:
        reason = f"does not beat champion v{holder.version}: {new:.4f} vs {old:.4f}"
    else:
        reason = (f"beats the best baseline {best} ({new:.4f} vs {floor:.4f})" if best else "no baseline to beat") + (
            f" and champion v{holder.version} ({old:.4f})" if old is not None else
            (f"; champion v{holder.version} cannot score these examples" if holder is not None else
             "; no champion yet"))
    ope_ok, ope_reason = ope_verdict(ope)
    promoted = beats_baseline and (old is None or new > old) and ope_ok
    reason += ope_reason
    tags = client.get_model_version(name, version).tags
    if PRIVACY_TAGS[0] in tags:
        decision.update(privacy_epsilon=float(tags[PRIVACY_TAGS[0]]), privacy_delta=float(tags[PRIVACY_TAGS[1]]))
        reason += (f"; trained with DP-SGD: epsilon {decision['privacy_epsilon']:.3g} at delta "
                   f"{decision['privacy_delta']:.3g}")
    decision.update(promoted=promoted, reason=reason, champion_removed=False,
                    **{f"ope_{k}": v for k, v in (ope or {}).items()})
    if promoted:
        client.set_registered_model_alias(name, alias, version)
    elif holder is not None and (old is None or old <= floor):
        # the holder cannot score these users or loses to the baseline on them: publish the baseline instead
        client.delete_registered_model_alias(name, alias)
        decision["champion_removed"] = True
        decision["reason"] += (f"; champion v{holder.version} " + (
            f"loses to {best} too ({old:.4f}): alias removed, the nightly job publishes {best}" if old is not None
            else "cannot score these examples: alias removed"))
    if best:
        client.set_registered_model_tag(name, BEST_BASELINE_TAG, best)
    client.set_model_version_tag(name, version, PROMOTION_TAG, decision["reason"])
    return decision
