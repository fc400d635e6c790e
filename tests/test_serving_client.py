"""Deploy's comparison and the traffic split, on databricks-sdk's own serving classes (no server)."""
from __future__ import annotations

import inspect

import pytest
from databricks.sdk.service.serving import (
    EndpointCoreConfigOutput,
    Route,
    ServedEntityOutput,
    ServedModelOutput,
    ServingEndpointsAPI,
    ServingEndpointDetailed,
    TrafficConfig,
)

from pipeline.registry_names import CHALLENGER, CHAMPION
from pipeline.serving.client import _matches, normalised_config
from pipeline.serving.routes import Router, desired_routes, even_split


def endpoint(entities=None, models=None, routes=None) -> ServingEndpointDetailed:
    return ServingEndpointDetailed(name="ep", config=EndpointCoreConfigOutput(
        served_entities=entities, served_models=models,
        traffic_config=TrafficConfig(routes=routes) if routes is not None else None))


def entity(name, version, size="Small", scale=True, model="p300-classifier") -> ServedEntityOutput:
    return ServedEntityOutput(name=name, entity_name=model, entity_version=version, workload_size=size,
                              scale_to_zero_enabled=scale)


WANT = {CHAMPION: "1", CHALLENGER: "2"}
ROUTES = {CHAMPION: 100, CHALLENGER: 0}


def test_an_echo_without_the_zero_percent_route_is_already_serving(cfg):
    ep = endpoint([entity(CHAMPION, "1"), entity(CHALLENGER, "2")], routes=[Route(served_model_name=CHAMPION,
                                                                                  traffic_percentage=100)])
    assert _matches(ep, cfg, WANT, ROUTES)
    with_zero = endpoint([entity(CHAMPION, "1"), entity(CHALLENGER, "2")],
                         routes=[Route(served_entity_name=CHAMPION, traffic_percentage=100),
                                 Route(served_entity_name=CHALLENGER, traffic_percentage=0)])
    assert _matches(with_zero, cfg, WANT, ROUTES)
    assert normalised_config(ep) == normalised_config(with_zero)


def test_served_models_only_and_a_missing_size_match(cfg):
    legacy = endpoint(models=[ServedModelOutput(name=CHAMPION, model_name="p300-classifier", model_version="1"),
                              ServedModelOutput(name=CHALLENGER, model_name="p300-classifier", model_version="2")],
                      routes=[Route(served_model_name=CHAMPION, traffic_percentage=100)])
    assert _matches(legacy, cfg, WANT, ROUTES)


@pytest.mark.parametrize("ep", [
    endpoint([entity(CHAMPION, "1"), entity(CHALLENGER, "3")], routes=[Route(served_model_name=CHAMPION,
                                                                             traffic_percentage=100)]),
    endpoint([entity(CHAMPION, "1", size="Medium"), entity(CHALLENGER, "2")],
             routes=[Route(served_model_name=CHAMPION, traffic_percentage=100)]),
    endpoint([entity(CHAMPION, "1"), entity(CHALLENGER, "2", model="other")],
             routes=[Route(served_model_name=CHAMPION, traffic_percentage=100)]),
    endpoint([entity(CHAMPION, "1")], routes=[Route(served_model_name=CHAMPION, traffic_percentage=100)]),
    endpoint([entity(CHAMPION, "1"), entity(CHALLENGER, "2")],
             routes=[Route(served_model_name=CHAMPION, traffic_percentage=50),
                     Route(served_model_name=CHALLENGER, traffic_percentage=50)]),
    endpoint([entity(CHAMPION, "1", scale=False), entity(CHALLENGER, "2")],
             routes=[Route(served_model_name=CHAMPION, traffic_percentage=100)]),
    endpoint(None, routes=None),
], ids=["version", "size", "model", "entity missing", "traffic", "scale to zero", "no config"])
def test_real_differences_still_differ(cfg, ep):
    assert not _matches(ep, cfg, WANT, ROUTES)


def test_normalised_config_is_what_deploy_compares():
    ep = endpoint([entity(CHAMPION, "1", size="Small"), entity(CHALLENGER, 2)],
                  routes=[Route(served_entity_name=CHAMPION, traffic_percentage=100),
                          Route(served_entity_name=CHALLENGER, traffic_percentage=0)])
    assert normalised_config(ep) == (
        frozenset({(CHAMPION, "p300-classifier", "1", "Small"), (CHALLENGER, "p300-classifier", "2", "Small")}),
        frozenset({(CHAMPION, 100)}))
    assert normalised_config(None) == (frozenset(), frozenset())


def test_first_build_limit_defaults_to_the_sdk_waiter(cfg):
    sdk_default = inspect.signature(ServingEndpointsAPI.wait_get_serving_endpoint_not_updating).parameters["timeout"]
    assert cfg.serving.first_build_timeout_s == sdk_default.default.total_seconds()


def test_one_traffic_split_for_client_and_server():
    assert desired_routes([CHAMPION, CHALLENGER]) == {CHAMPION: 100, CHALLENGER: 0}
    assert desired_routes([CHALLENGER]) == {CHALLENGER: 100}
    assert even_split(["a", "b", "c"]) == {"a": 34, "b": 33, "c": 33}
    route = Router([("a", 0), ("b", 100)])
    assert {route() for _ in range(50)} == {"b"}
