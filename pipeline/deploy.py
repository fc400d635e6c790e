"""`p300 deploy`: serve the registry's challenger beside its champion (idempotent).

Reads aliases ``challenger`` and ``champion`` of ``registry.model_name`` and makes the
serving endpoint (``serving.endpoint_name``) serve them under those served-entity
names, through databricks-sdk: on a Databricks workspace (``serving.backend:
databricks``) or on the local endpoint server, started in the background when none
runs. No endpoint: it is created. An endpoint serving other versions: its config is
updated. Already serving them: nothing happens, and the output says so. The command
returns when the endpoint serves the new config (a new endpoint's first build is waited
for up to ``serving.first_build_timeout_s``, 20 minutes by default, as the SDK's waiter
does); an update already in progress is waited on first. "Already serving" is decided
on a normalised config (``pipeline.serving.client.normalised_config``): entities by
name, version and size, routes without the 0% ones.

Traffic: champion 100 / challenger 0 when both are served (evaluation calls the
challenger through its direct served-model URL), 100 to a single served entity.
"""
from __future__ import annotations

import argparse

from pipeline import registry as reg
from pipeline.config import Config
from pipeline.registry_names import CHALLENGER, CHAMPION
from pipeline.report import Reporter
from pipeline.serving.client import DeployOutcome, apply_served_versions, workspace_client
from pipeline.serving.process import SERVER_LOG_FILE, ServingError

__all__ = ["DeployRefused", "versions_to_serve", "deploy", "main"]


class DeployRefused(Exception):
    """Nothing to deploy (no aliased version)."""


def versions_to_serve(champion: str | None, challenger: str | None) -> dict[str, str]:
    """{served name: version}: the champion when there is one, the challenger when it is
    another version (a challenger equal to the champion is served once, as champion)."""
    versions: dict[str, str] = {}
    if champion is not None:
        versions[CHAMPION] = str(champion)
    if challenger is not None and str(challenger) != versions.get(CHAMPION):
        versions[CHALLENGER] = str(challenger)
    return versions


def deploy(cfg: Config, rep: Reporter) -> DeployOutcome:
    client = reg.mlflow_client(cfg)
    champion = reg.alias_version(client, cfg, CHAMPION)
    challenger = reg.alias_version(client, cfg, CHALLENGER)
    versions = versions_to_serve(champion.version if champion else None,
                                 challenger.version if challenger else None)
    if not versions:
        raise DeployRefused(f"no version of {cfg.registry.model_name!r} has alias {CHALLENGER!r} or {CHAMPION!r}: "
                            f"run `p300 train` first")
    if challenger is None:
        rep.info(f"no {CHALLENGER} alias: serving the {CHAMPION} (version {champion.version}) alone")
    ws = workspace_client(cfg, start=True, rep=rep)
    outcome = apply_served_versions(ws, cfg, versions, rep)
    if cfg.serving.backend == "databricks":  # the endpoint logs to its inference table (docs/monitoring.md)
        from pipeline.inference_capture import enable_capture

        enable_capture(ws, cfg, rep)
    return outcome


def main(cfg: Config, args: argparse.Namespace, rep: Reporter) -> int:
    from databricks.sdk.errors import DatabricksError

    try:
        with rep.stage("deploy"):
            outcome = deploy(cfg, rep)
    except DeployRefused as exc:
        rep.warn(str(exc))
        return 1
    except (ServingError, DatabricksError, TimeoutError) as exc:
        where = ""
        if isinstance(exc, DatabricksError) and cfg.serving.backend == "local":  # a 500 names the exception only
            where = f" (the local endpoint server's log has the traceback: {cfg.serving_dir / SERVER_LOG_FILE})"
        rep.warn(f"deploy failed: {exc}{where}")
        return 1
    rep.result(f"endpoint {outcome.endpoint}: {outcome.action} (config version {outcome.config_version}, "
               f"{outcome.waited_s:.1f}s{f', waited for {outcome.conflicts} update(s) in progress' if outcome.conflicts else ''})")
    rep.table([(name, cfg.registry.model_name, version, outcome.routes.get(name, 0))
               for name, version in outcome.served.items()],
              ["served entity", "model", "version", "traffic %"])
    return 0
