"""What must hold after a crash and a rerun, checked with chispa and the MLflow registry against
the uncrashed reference root (tests/faults/harness.py makes both)."""
from __future__ import annotations

from pathlib import Path

from harness import SUBJECTS


class Invariants:
    def __init__(self, spark) -> None:
        self.spark = spark

    @staticmethod
    def _cfg(root: Path):
        from pipeline.config import load_config

        return load_config(root=str(root), env={})

    def _table(self, root: Path, name: str):
        from pipeline import storage

        return storage.read_table(self.spark, self._cfg(root), name)

    def same_table(self, root: Path, ref: Path, name: str, key: list[str], ignore: tuple[str, ...] = ()) -> None:
        """The whole table equals the reference: each key exactly once, every column alike
        (but ``ignore``d ones, such as a time of writing)."""
        from chispa import assert_df_equality
        from pyspark.sql import functions as F

        got, want = self._table(root, name), self._table(ref, name)
        dupes = got.groupBy(*key).count().where(F.col("count") > 1).limit(5).collect()
        assert not dupes, f"{name}: duplicated {key}: {dupes}"
        columns = sorted(c for c in want.columns if c not in ignore)
        assert_df_equality(got.select(*columns), want.select(*columns),
                           ignore_row_order=True, ignore_nullable=True)

    def one_final_row(self, root: Path, name: str, key: str, ok: tuple[str, ...]) -> dict:
        """Every file/subject has exactly one log row, and it says the work was done."""
        rows = self._table(root, name).select(key, "status").collect()
        per_key: dict = {}
        for r in rows:
            per_key.setdefault(r[key], []).append(r.status)
        bad = {k: v for k, v in per_key.items() if len(v) != 1 or v[0] not in ok}
        assert not bad, f"{name}: keys without exactly one final row: {bad}"
        return per_key

    def data(self, root: Path, ref: Path, through: str = "ingested") -> None:
        """Landing zone empty, every file archived and logged once, raw_eeg (and, ``through``
        preprocessed, features and preprocess_log) equal to the reference."""
        cfg = self._cfg(root)
        landing = [p.name for p in Path(cfg.landing_dir).iterdir() if not p.name.startswith((".", "_"))]
        assert landing == [], f"left unprocessed in the landing zone: {landing}"
        archived = sorted(p.name for p in Path(cfg.archive_dir).iterdir())
        assert archived == sorted(p.name for p in Path(self._cfg(ref).archive_dir).iterdir())
        assert len(archived) == SUBJECTS
        self.same_table(root, ref, "raw_eeg", ["subject_id", "sample_idx"])
        files = self.one_final_row(root, "ingest_log", "file", ("ingested",))
        assert sorted(files) == archived
        if through == "preprocessed":
            self.same_table(root, ref, "features", ["subject_id", "epoch_idx"])
            subjects = self.one_final_row(root, "preprocess_log", "subject_id", ("ok",))
            assert len(subjects) == SUBJECTS

    def registry(self, root: Path) -> dict[str, str]:
        """Every version is complete (lineage tags, a finished run), no model registered twice;
        aliases resolve to complete models. Returns alias -> version."""
        import mlflow

        from pipeline import registry as reg

        cfg = self._cfg(root)
        client = reg.mlflow_client(cfg)
        name = cfg.registry.model_name
        versions = client.search_model_versions(f"name = '{name}'")
        for mv in versions:
            missing = [t for t in (reg.TAG_FINGERPRINT, reg.PARAM_TRAINING_SUBJECTS, reg.PARAM_FEATURES_VERSION)
                       if t not in mv.tags]
            assert not missing, f"version {mv.version} lacks lineage tags {missing}"
            assert client.get_run(mv.run_id).info.status == "FINISHED", f"version {mv.version}: run not finished"
        fingerprints = [mv.tags[reg.TAG_FINGERPRINT] for mv in versions]
        assert len(fingerprints) == len(set(fingerprints)), f"a model registered twice: {fingerprints}"
        aliases = {}
        for alias in (reg.CHAMPION, reg.CHALLENGER):
            mv = reg.alias_version(client, cfg, alias)
            if mv is not None:
                aliases[alias] = str(mv.version)
                mlflow.set_registry_uri(cfg.registry_uri)
                local = mlflow.artifacts.download_artifacts(f"models:/{name}@{alias}")
                assert (Path(local) / "MLmodel").exists(), f"alias {alias}: no complete model"
        return aliases

    def endpoint(self, root: Path, aliases: dict[str, str]) -> None:
        """The endpoint serves the versions the aliases name."""
        from pipeline.deploy import versions_to_serve
        from pipeline.serving import get_endpoint, served_versions, workspace_client

        cfg = self._cfg(root)
        ep = get_endpoint(workspace_client(cfg), cfg.serving.endpoint_name)
        assert served_versions(ep) == versions_to_serve(aliases.get("champion"), aliases.get("challenger"))
