"""`p300 promote`: the challenger becomes champion, in the registry and on the endpoint.

The endpoint is updated first (champion serves the new version with all traffic, the
challenger entity goes away), then the registry follows (alias champion moves, stage
Production where stages exist, previous champion Archived, alias challenger cleared).
A rerun after a crash in between finishes the job; with no challenger it only checks
that the endpoint serves the champion, so running it twice changes nothing.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from pipeline.config import Config
from pipeline.faults import kill_point
from pipeline.registry import alias_version, clear_alias, mlflow_client, set_alias, set_stage
from pipeline.registry_names import CHALLENGER, CHAMPION, TAG_COMPARISON, TAG_TARGET, TAG_TARGET_SET, TAG_VERSION
from pipeline.report import Reporter
from pipeline.serving import apply_served_versions, get_endpoint, served_versions, workspace_client

__all__ = ["GateResult", "latest_comparison", "gate", "promote", "main"]


class PromotionRefused(Exception):
    """The gate said no (the message has both numbers)."""


@dataclass
class GateResult:
    metric: str
    champion: float
    challenger: float
    min_delta: float
    comparison_id: str

    @property
    def passed(self) -> bool:
        return self.challenger - self.champion > self.min_delta


def latest_comparison(client: MlflowClient, cfg: Config, champion: str, challenger: str) -> dict[str, dict] | None:
    """The newest `evaluate --target both` that compared exactly these two versions:
    {"champion": run metrics, "challenger": run metrics, "id": comparison id}. Only finished
    runs count: an evaluation killed mid-way stays RUNNING with part of its metrics."""
    exp = client.get_experiment_by_name(cfg.evaluation.experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{TAG_TARGET_SET}` = 'both' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=200)
    by_comparison: dict[str, dict] = {}
    order: list[str] = []
    for run in runs:
        cid = run.data.tags.get(TAG_COMPARISON)
        if cid not in by_comparison:
            by_comparison[cid] = {}
            order.append(cid)
        by_comparison[cid][run.data.tags.get(TAG_TARGET)] = run
    for cid in order:
        pair = by_comparison[cid]
        if (CHAMPION in pair and CHALLENGER in pair and pair[CHAMPION].data.tags.get(TAG_VERSION) == champion
                and pair[CHALLENGER].data.tags.get(TAG_VERSION) == challenger):
            return {"id": cid, CHAMPION: pair[CHAMPION].data.metrics, CHALLENGER: pair[CHALLENGER].data.metrics}
    return None


def gate(client: MlflowClient, cfg: Config, champion: str, challenger: str, metric: str, min_delta: float) -> GateResult:
    found = latest_comparison(client, cfg, champion, challenger)
    if found is None:
        raise PromotionRefused(f"no `p300 evaluate --target both` run compares champion v{champion} with challenger "
                               f"v{challenger}: run it first")
    missing = [t for t in (CHAMPION, CHALLENGER) if metric not in found[t]]
    if missing:
        known = sorted(k for k in found[CHAMPION] if not k.startswith("roc_auc_subject_")
                       or k in ("roc_auc_subject_mean", "roc_auc_subject_min"))
        raise PromotionRefused(f"metric {metric!r} not logged for {missing}; logged metrics: {known}")
    return GateResult(metric, found[CHAMPION][metric], found[CHALLENGER][metric], min_delta, found["id"])


def promote(cfg: Config, rep: Reporter, require_better: str | None = None, min_delta: float = 0.0) -> str | None:
    """Promote; returns the new champion version, or None when there was nothing to promote."""
    client = mlflow_client(cfg)
    challenger = alias_version(client, cfg, CHALLENGER)
    champion = alias_version(client, cfg, CHAMPION)
    ws = workspace_client(cfg, start=cfg.serving.backend == "local", rep=rep)
    if challenger is None:
        if champion is None:
            rep.result("promote: no challenger and no champion: nothing to promote")
            return None
        served = served_versions(get_endpoint(ws, cfg.serving.endpoint_name))
        if served == {CHAMPION: str(champion.version)}:
            rep.result(f"promote: no challenger; champion v{champion.version} is served: nothing to do")
            return None
        rep.info(f"no challenger, but the endpoint serves {served}: making it serve champion v{champion.version}")
        apply_served_versions(ws, cfg, {CHAMPION: str(champion.version)}, rep)
        return None
    new = str(challenger.version)
    if champion is not None and str(champion.version) == new:
        rep.info(f"v{new} is already champion; clearing the challenger alias")
    elif require_better and champion is not None:
        result = gate(client, cfg, str(champion.version), new, require_better, min_delta)
        verdict = "passes" if result.passed else "fails"
        rep.result(f"promote gate: {require_better} champion v{champion.version} = {result.champion:.4f}, "
                   f"challenger v{new} = {result.challenger:.4f}, required delta > {min_delta:g}: {verdict}")
        if not result.passed:
            raise PromotionRefused(f"challenger v{new} is not better on {require_better}: {result.challenger:.4f} vs "
                                   f"champion v{champion.version} {result.champion:.4f} (min delta {min_delta:g})")
    elif require_better:
        rep.info("no champion yet: the first challenger is promoted without a comparison")
    with rep.stage(f"endpoint {cfg.serving.endpoint_name}: champion -> v{new} (100% traffic)"):
        outcome = apply_served_versions(ws, cfg, {CHAMPION: new}, rep)
    kill_point(cfg, "promote.after_endpoint")
    set_alias(client, cfg, CHAMPION, new)
    kill_point(cfg, "promote.after_champion_alias")
    staged = set_stage(client, cfg, new, "Production", archive_existing=True)
    clear_alias(client, cfg, CHALLENGER)
    previous = f"v{champion.version}" if champion is not None else "none"
    rep.result(f"promote: {cfg.registry.model_name} v{new} is champion (previous: {previous}); "
               f"endpoint {outcome.action}; stage {'Production' if staged else 'n/a (registry without stages)'}")
    return new


def main(cfg: Config, args: argparse.Namespace, rep: Reporter) -> int:
    try:
        promote(cfg, rep, args.require_better, args.min_delta)
    except PromotionRefused as exc:
        rep.result(f"promote: refused: {exc}")
        return 1
    return 0
