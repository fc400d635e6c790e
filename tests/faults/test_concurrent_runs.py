"""Two ingests (and two preprocesses) started at the same moment on one root: the second waits for
the first's lock (pipeline/locks.py), then finds nothing left to do; nothing is written twice."""
from __future__ import annotations

import threading

import pytest
from harness import SUBJECTS

pytestmark = [pytest.mark.faults, pytest.mark.spark]


def _together(p300, root, *argv):
    """Start two real `p300` processes at once; both results."""
    results = [None, None]
    gate = threading.Barrier(2)

    def one(i):
        gate.wait()
        results[i] = p300(root, *argv)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _count(out: str, prefix: str, what: str) -> int:
    line = next(x for x in out.splitlines() if x.startswith(prefix))
    return int(line[len(prefix):].split(what)[0])


def test_two_ingests_then_two_preprocesses_at_once(prepared, case_root, invariants, p300):
    prepared.root("preprocessed")  # the reference
    prepared.copy("landing", case_root)
    runs = _together(p300, case_root, "ingest")
    assert [r.code for r in runs] == [0, 0], [r.err[-2000:] for r in runs]
    # one run ingested every file, the other none (it waited for the lock, or came after)
    assert sorted(_count(r.out, "ingest: ", " ingested") for r in runs) == [0, SUBJECTS]
    invariants.data(case_root, prepared.root("ingested"))

    runs = _together(p300, case_root, "preprocess")
    assert [r.code for r in runs] == [0, 0], [r.err[-2000:] for r in runs]
    assert sorted(_count(r.out, "preprocess: ", " ok") for r in runs) == [0, SUBJECTS]
    invariants.data(case_root, prepared.root("preprocessed"), through="preprocessed")
