"""udfs.landing: a landing file (bytes or local path) -> its checks and its raw_eeg chunk rows, without Spark."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from udfs import landing, raw_chunks

CH = ["eeg_ch1", "eeg_ch2"]


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf)
    return buf.getvalue()


def frame(n: int = 500) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    stim = np.zeros(n, dtype=np.int64)
    stim[[50, 200, 350]] = [1, 2, 1]
    return pd.DataFrame({"eeg_ch1": rng.normal(size=n), "eeg_ch2": rng.normal(size=n), "stim": stim})


def test_checks_count_what_makes_a_file_bad():
    good = landing.check_file(parquet_bytes(frame()), CH, "stim", (1, 2), stim_float=False)
    assert good == {"rows": 500, "bad": "{}", "events": 2 + 1, "bad_stim": 0, "error": None}

    f = frame()
    f.loc[[3, 4], "eeg_ch2"] = np.nan
    f.loc[9, "eeg_ch1"] = np.inf
    f["stim"] = f["stim"].astype(float)
    f.loc[7, "stim"] = 0.5
    f.loc[8, "stim"] = np.nan
    bad = landing.check_file(parquet_bytes(f), CH, "stim", (1, 2), stim_float=True)
    assert json.loads(bad["bad"]) == {"eeg_ch1": 1, "eeg_ch2": 2} and bad["bad_stim"] == 2

    none = landing.check_file(parquet_bytes(frame().assign(stim=0)), CH, "stim", (1, 2), stim_float=False)
    assert none["events"] == 0

    data = parquet_bytes(frame())
    corrupt = data[:4] + bytes(len(data) - 8 - 200) + data[-(200 + 4):]  # pages zeroed, footer intact
    broken = landing.check_file(corrupt, CH, "stim", (1, 2), stim_float=False)
    assert broken["rows"] is None and broken["error"]


def test_encode_file_round_trips_and_fills_missing_channels():
    f = frame(1000)
    rows = landing.encode_file(parquet_bytes(f), 7, CH, [*CH, "eeg_ch3"], "stim", chunk=256, ingest_id="abc", sfreq=250.0)
    assert list(rows["sample_idx"]) == [0, 256, 512, 768] and rows["eeg_ch3"].isna().all()
    assert (rows["subject_id"] == 7).all() and (rows["ingest_id"] == "abc").all() and (rows["sfreq"] == 250.0).all()
    data, stim, chans = raw_chunks.decode(rows, [*CH, "eeg_ch3"], "stim")
    assert chans == CH
    np.testing.assert_array_equal(data, f[CH].to_numpy(np.float32).astype(np.float64).T)
    np.testing.assert_array_equal(stim, f["stim"].to_numpy())
    # the mapInPandas wrapper: files looked up by name, whatever the scheme of the path
    specs = {"s.parquet": {"subject_id": 7, "channels": CH, "ingest_id": "abc", "sfreq": 250.0}}
    out = list(landing.encode_files(iter([pd.DataFrame({"path": ["dbfs:/x/s.parquet"], "content": [parquet_bytes(f)]})]),
                                    specs, CH, "stim", 256))
    assert len(out) == 1 and out[0]["n_samples"].sum() == 1000


def test_a_local_path_reads_like_the_bytes_and_long_files_come_back_in_bounded_batches(tmp_path, monkeypatch):
    f = frame(1000)
    path = tmp_path / "s.parquet"
    path.write_bytes(parquet_bytes(f))
    assert landing.check_file(str(path), CH, "stim", (1, 2), False) == landing.check_file(
        parquet_bytes(f), CH, "stim", (1, 2), False)
    specs = {"s.parquet": {"subject_id": 7, "channels": CH, "ingest_id": "abc", "sfreq": 250.0,
                           "stim_float": False, "local_path": str(path)}}
    rows = pd.DataFrame({"path": [f"file:{path}"]})  # no content column: the file is opened by its local path
    checks = next(landing.check_files(iter([rows]), specs, "stim", (1, 2)))
    assert checks.to_dict("records") == [{"name": "s.parquet", **landing.check_file(str(path), CH, "stim", (1, 2), False)}]
    monkeypatch.setattr(raw_chunks, "BATCH_BYTES", 3 * 256 * 4 * 3)  # three 256-sample chunk rows of 2 channels + stim
    out = list(landing.encode_files(iter([rows]), specs, CH, "stim", 256))
    assert [len(o) for o in out] == [3, 1]
    whole = landing.encode_file(parquet_bytes(f), 7, CH, CH, "stim", 256, "abc", 250.0)
    pd.testing.assert_frame_equal(pd.concat(out), whole)
