"""Deploy's inference-table settings for Databricks, as the SDK's own classes carry them."""
from __future__ import annotations

import pytest
from databricks.sdk.service.serving import AiGatewayConfig, AiGatewayInferenceTableConfig, ServingEndpointDetailed

from pipeline.config import ConfigError, load_config
from pipeline.inference_capture import inference_table_config


def test_payload_table_name_becomes_the_gateway_config():
    cfg = load_config("databricks.yaml", env={}, overrides=["storage.tables.inference_log=main.p300.p300_endpoint_payload"])
    config = inference_table_config(cfg)
    assert isinstance(config, AiGatewayInferenceTableConfig)
    assert config.as_dict() == {"catalog_name": "main", "schema_name": "p300", "table_name_prefix": "p300_endpoint",
                                "enabled": True}
    # what the workspace answers round-trips through the SDK to the same settings
    endpoint = ServingEndpointDetailed.from_dict({"name": "p300-endpoint", "ai_gateway": {
        "inference_table_config": config.as_dict()}})
    assert isinstance(endpoint.ai_gateway, AiGatewayConfig)
    assert endpoint.ai_gateway.inference_table_config.as_dict() == config.as_dict()


@pytest.mark.parametrize("name", ["inference_log", "p300.inference_log", "/Volumes/a/b/c"])
def test_a_path_or_two_part_name_is_refused_with_the_key(name):
    cfg = load_config("databricks.yaml", env={}, overrides=[f"storage.tables.inference_log={name}"])
    with pytest.raises(ConfigError, match="storage.tables.inference_log"):
        inference_table_config(cfg)
