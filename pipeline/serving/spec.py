"""An endpoint's config: served entities and traffic routes, validated as Databricks does.

``ConfigSpec.from_request`` accepts the body of a create or update-config request
(``served_entities``, or the older ``served_models``; ``traffic_config.routes``) and
refuses what Databricks refuses, with a message that names the field.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipeline.serving.errors import bad_parameter
from pipeline.serving.routes import even_split

__all__ = ["EntitySpec", "ConfigSpec", "NAME_RE"]

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,63}$")


@dataclass(frozen=True)
class EntitySpec:
    """One served entity: a registered model version under a name."""

    name: str
    entity_name: str
    entity_version: str
    workload_size: str = "Small"
    scale_to_zero_enabled: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return (self.entity_name, self.entity_version)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "entity_name": self.entity_name, "entity_version": self.entity_version,
                "workload_size": self.workload_size, "scale_to_zero_enabled": self.scale_to_zero_enabled}

    @classmethod
    def from_request(cls, item: Any, at: str) -> "EntitySpec":
        if not isinstance(item, dict):
            raise bad_parameter(f"{at} must be an object")
        entity_name, version = item.get("entity_name"), item.get("entity_version")
        if not isinstance(entity_name, str) or not entity_name:
            raise bad_parameter(f"{at}.entity_name is required (a registered model name)")
        if isinstance(version, int) and not isinstance(version, bool):
            version = str(version)
        if not isinstance(version, str) or not version.isdigit():
            raise bad_parameter(f"{at}.entity_version is required (a model version number), got {version!r}")
        name = item.get("name") or f"{entity_name.split('.')[-1]}-{version}"
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise bad_parameter(f"{at}.name {name!r}: letters, digits, '-' and '_' only (at most 63)")
        size = item.get("workload_size") or "Small"
        if size not in ("Small", "Medium", "Large"):
            raise bad_parameter(f"{at}.workload_size must be Small, Medium or Large, got {size!r}")
        scale = item.get("scale_to_zero_enabled")
        return cls(name, entity_name, version, size, True if scale is None else bool(scale))


def _routes(traffic: Any, names: list[str], where: str) -> list[tuple[str, int]]:
    if traffic is not None and not isinstance(traffic, dict):
        raise bad_parameter(f"{where}.traffic_config must be an object with 'routes'")
    if not traffic or traffic.get("routes") is None:
        return list(even_split(names).items())
    if not isinstance(traffic["routes"], list):
        raise bad_parameter(f"{where}.traffic_config.routes must be a list")
    routes: list[tuple[str, int]] = []
    for j, route in enumerate(traffic["routes"]):
        at = f"{where}.traffic_config.routes[{j}]"
        if not isinstance(route, dict):
            raise bad_parameter(f"{at} must be an object")
        target = route.get("served_entity_name") or route.get("served_model_name")
        pct = route.get("traffic_percentage")
        if target not in names:
            raise bad_parameter(f"{at} names served entity {target!r}, which is not one of {names}")
        if not isinstance(pct, int) or isinstance(pct, bool) or not 0 <= pct <= 100:
            raise bad_parameter(f"{at}.traffic_percentage must be an integer in 0..100, got {pct!r}")
        routes.append((target, pct))
    if len({t for t, _ in routes}) != len(routes):
        raise bad_parameter(f"{where}.traffic_config: one route per served entity")
    if sum(p for _, p in routes) != 100:
        raise bad_parameter(f"{where}.traffic_config: percentages must sum to 100, got {sum(p for _, p in routes)}")
    return routes


@dataclass(frozen=True)
class ConfigSpec:
    """An endpoint's served entities and traffic routes (percentages summing to 100)."""

    entities: tuple[EntitySpec, ...]
    routes: tuple[tuple[str, int], ...]

    @classmethod
    def from_request(cls, body: Any, where: str = "config") -> "ConfigSpec":
        """Validate a request's config (``served_entities`` or the older ``served_models``)."""
        if not isinstance(body, dict):
            raise bad_parameter(f"{where} must be an object")
        raw = body.get("served_entities")
        legacy = body.get("served_models")
        if raw is None and legacy is not None:
            raw = [{"name": m.get("name"), "entity_name": m.get("model_name"), "entity_version": m.get("model_version"),
                    "workload_size": m.get("workload_size"), "scale_to_zero_enabled": m.get("scale_to_zero_enabled")}
                   if isinstance(m, dict) else m for m in legacy]
        if not isinstance(raw, list) or not raw:
            raise bad_parameter(f"{where}.served_entities must be a non-empty list")
        entities = [EntitySpec.from_request(item, f"{where}.served_entities[{i}]") for i, item in enumerate(raw)]
        names = [e.name for e in entities]
        if len(set(names)) != len(names):
            raise bad_parameter(f"{where}: served entity names must be unique, got {names}")
        return cls(tuple(entities), tuple(_routes(body.get("traffic_config"), names, where)))

    @property
    def scale_to_zero(self) -> frozenset[str]:
        """Names of the served entities that scale to zero when idle."""
        return frozenset(e.name for e in self.entities if e.scale_to_zero_enabled)

    def to_dict(self) -> dict[str, Any]:
        return {"served_entities": [e.to_dict() for e in self.entities],
                "traffic_config": {"routes": [{"served_entity_name": n, "traffic_percentage": p}
                                              for n, p in self.routes]}}

    def describe(self, version: int, states: dict[str, tuple[str, str]], created: dict[str, int]) -> dict[str, Any]:
        """The config as Databricks reports it (EndpointCoreConfigOutput / EndpointPendingConfig)."""
        entities, models = [], []
        for e in self.entities:
            deployment, message = states.get(e.name, ("DEPLOYMENT_CREATING", ""))
            state = {"deployment": deployment, "deployment_state_message": message}
            entities.append({**e.to_dict(), "creator": "local", "creation_timestamp": created.get(e.name),
                             "state": state})
            models.append({"name": e.name, "model_name": e.entity_name, "model_version": e.entity_version,
                           "workload_size": e.workload_size, "scale_to_zero_enabled": e.scale_to_zero_enabled,
                           "creator": "local", "creation_timestamp": created.get(e.name), "state": state})
        routes = [{"served_entity_name": n, "served_model_name": n, "traffic_percentage": p} for n, p in self.routes]
        return {"config_version": version, "served_entities": entities, "served_models": models,
                "traffic_config": {"routes": routes}}
