"""Unity Catalog's registry answers: ``search_model_versions`` gives ``ModelVersionSearch``
(no tags, no aliases: reading them raises), ``get_model_version`` the full version. A real
MlflowClient over a registry store that answers through MLflow's own UC proto conversion
(mlflow.utils._unity_catalog_utils), on a real SQLite registry underneath."""
from __future__ import annotations

import pytest
from mlflow.entities.model_registry.model_version_search import ModelVersionSearch
from mlflow.protos.databricks_uc_registry_messages_pb2 import ModelVersion as ProtoModelVersion
from mlflow.protos.databricks_uc_registry_messages_pb2 import ModelVersionStatus
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking._model_registry.utils import _get_store_registry
from mlflow.utils._unity_catalog_utils import model_version_from_uc_proto, model_version_search_from_uc_proto

from config_factory import make_config
from mlflow_template import seed_store
from pipeline import registry as reg


def _uc_proto(mv) -> ProtoModelVersion:
    proto = ProtoModelVersion(name=mv.name, version=str(mv.version), creation_timestamp=mv.creation_timestamp,
                              last_updated_timestamp=mv.last_updated_timestamp or 0, source=mv.source or "",
                              run_id=mv.run_id or "", status=ModelVersionStatus.Value("READY"))
    for key, value in (mv.tags or {}).items():
        proto.tags.add(key=key, value=value)
    for alias in mv.aliases or []:
        proto.aliases.add(alias=alias, version=str(mv.version))
    return proto


class UcAnswers(SqlAlchemyStore):
    """SQLite underneath; answers shaped as Unity Catalog's REST store returns them."""

    searches = 0

    def search_model_versions(self, filter_string=None, max_results=None, order_by=None, page_token=None):
        type(self).searches += 1
        found = super().search_model_versions(filter_string, max_results, order_by, page_token)
        return PagedList([model_version_search_from_uc_proto(_uc_proto(mv)) for mv in found], found.token)

    def get_model_version(self, name, version):
        return model_version_from_uc_proto(_uc_proto(super().get_model_version(name, version)))


@pytest.fixture
def uc_cfg(root, mlflow_template):
    seed_store(mlflow_template, root / "uc.db")  # a migrated registry store, as the root's own
    _get_store_registry().register("uctest", lambda store_uri, tracking_uri: UcAnswers(
        "sqlite:///" + store_uri.removeprefix("uctest:")))
    return make_config(root, **{"registry.registry_uri": f"uctest:{root / 'uc.db'}",
                                "registry.model_name": "main.p300.p300_classifier"})


def test_find_version_by_tag_reads_tags_from_get_model_version(uc_cfg):
    client = reg.mlflow_client(uc_cfg)
    name = uc_cfg.registry.model_name
    client.create_registered_model(name)
    for fp in ("aaa", "bbb", "ccc"):
        client.create_model_version(name, source=f"file:///models/{fp}", tags={reg.TAG_FINGERPRINT: fp})
    client.set_registered_model_alias(name, reg.CHALLENGER, "2")

    (first, *_) = client.search_model_versions(f"name = '{name}'")
    assert isinstance(first, ModelVersionSearch)
    with pytest.raises(Exception, match="get_model_version"):
        first.tags()  # what the old `(v.tags or {}).get(...)` ran into

    found = reg.find_version_by_tag(client, uc_cfg, reg.TAG_FINGERPRINT, "bbb")
    assert str(found.version) == "2" and found.tags[reg.TAG_FINGERPRINT] == "bbb"
    assert found.aliases == [reg.CHALLENGER]  # the full version: lineage sees its aliases
    assert reg.version_lineage(client, found).aliases == [reg.CHALLENGER]
    assert reg.find_version_by_tag(client, uc_cfg, reg.TAG_FINGERPRINT, "zzz") is None
    assert not reg.registry_has_stages(uc_cfg.model_copy(update={"registry": uc_cfg.registry.model_copy(
        update={"registry_uri": "databricks-uc"})}))


def test_find_version_by_tag_when_the_model_does_not_exist(uc_cfg):
    client = reg.mlflow_client(uc_cfg)
    assert reg.find_version_by_tag(client, uc_cfg, reg.TAG_FINGERPRINT, "aaa") is None
