"""On Databricks: the endpoint's own inference table, through AI Gateway (databricks-sdk).

Databricks logs every request and response of a serving endpoint to the Unity Catalog
table ``<catalog>.<schema>.<prefix>_payload`` once its AI Gateway inference table is
enabled (the legacy ``auto_capture_config`` is being retired for custom models). The
table is named once, as ``storage.tables.inference_log``, which the monitor then reads;
deploy derives catalog, schema and prefix from that name.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.config import Config, ConfigError
from pipeline.report import Reporter

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

__all__ = ["inference_table_config", "enable_capture", "PAYLOAD_SUFFIX"]

PAYLOAD_SUFFIX = "_payload"  # AI Gateway names the table <prefix>_payload


def inference_table_config(cfg: Config) -> Any:
    """The AiGatewayInferenceTableConfig for ``storage.tables.inference_log`` (catalog.schema.table)."""
    from databricks.sdk.service.serving import AiGatewayInferenceTableConfig

    name = cfg.storage.tables.inference_log
    parts = name.split(".")
    if len(parts) != 3 or not all(parts) or "/" in name:
        raise ConfigError(f"storage.tables.inference_log {name!r}: on serving.backend databricks it must be the "
                          f"Unity Catalog name of the endpoint's payload table, catalog.schema.<prefix>{PAYLOAD_SUFFIX}")
    catalog, schema, table = parts
    prefix = table[:-len(PAYLOAD_SUFFIX)] if table.endswith(PAYLOAD_SUFFIX) else table
    return AiGatewayInferenceTableConfig(catalog_name=catalog, schema_name=schema, table_name_prefix=prefix,
                                         enabled=True)


def enable_capture(ws: "WorkspaceClient", cfg: Config, rep: Reporter) -> bool:
    """Turn the endpoint's inference table on (keeping its other gateway settings); True if changed."""
    try:
        wanted = inference_table_config(cfg)
    except ConfigError as exc:  # a path table: deploy goes on, the monitor has nothing to read
        rep.warn(f"inference table not enabled: {exc}")
        return False
    name = cfg.serving.endpoint_name
    gateway = ws.serving_endpoints.get(name).ai_gateway
    current = gateway.inference_table_config if gateway else None
    if current is not None and current.as_dict() == wanted.as_dict():
        return False
    ws.serving_endpoints.put_ai_gateway(
        name, inference_table_config=wanted,
        fallback_config=gateway.fallback_config if gateway else None,
        guardrails=gateway.guardrails if gateway else None,
        rate_limits=gateway.rate_limits if gateway else None,
        usage_tracking_config=gateway.usage_tracking_config if gateway else None)
    rep.info(f"endpoint {name}: inference table {cfg.storage.tables.inference_log} enabled")
    return True
