from chispa import assert_df_equality
from delta.tables import DeltaTable


def test_delta_write_read_and_history(spark, cfg):
    path = cfg.table("raw_eeg")
    df = spark.createDataFrame([(1, 0, 1.5, 0), (1, 1, -2.0, 2), (2, 0, 0.25, 1)],
                               "subject_id int, sample_idx long, eeg_ch1 float, stim int")
    df.write.format("delta").partitionBy("subject_id").save(path)
    df.limit(1).write.format("delta").mode("append").save(path)
    back = spark.read.format("delta").load(path)
    expected = df.unionByName(df.limit(1))
    assert_df_equality(back, expected, ignore_row_order=True)
    history = DeltaTable.forPath(spark, path).history().orderBy("version").collect()
    assert [h.version for h in history] == [0, 1]
    assert [h.operation for h in history] == ["WRITE", "WRITE"]
    v0 = spark.read.format("delta").option("versionAsOf", 0).load(path)
    assert_df_equality(v0, df, ignore_row_order=True)


def test_storage_helpers_address_tables_by_name(spark, cfg):
    from pipeline.storage import _history_version, read_table, table_exists, table_version

    assert not table_exists(spark, cfg, "features") and table_version(spark, cfg, "features") is None
    spark.range(3).write.format("delta").save(cfg.table("features"))
    spark.range(5).write.format("delta").mode("overwrite").save(cfg.table("features"))
    assert table_exists(spark, cfg, "features") and table_version(spark, cfg, "features") == 1
    # the log object sees commits made after it was first asked, and agrees with history
    DeltaTable.forPath(spark, cfg.table("features")).delete("id = 0")
    assert table_version(spark, cfg, "features") == 2 == _history_version(spark, cfg, "features")
    assert read_table(spark, cfg, "features").count() == 4
    assert read_table(spark, cfg, "features", version=1).count() == 5
    assert read_table(spark, cfg, "features", version=0).count() == 3
