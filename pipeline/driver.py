"""spark-submit's primary resource: `spark-submit [options] .../pipeline/driver.py [p300 arguments]`.

spark-submit runs a Python application from a file, not a module, and puts that file's
folder first on ``sys.path``; this package's folder must not be there (its modules
``config``, ``spark``, ... would shadow top-level ones), so it is removed before
``p300``'s command line runs. The code archive that ``p300-submit --ship-code`` sends
with ``--py-files`` is for the executors: the driver runs the installed package it was
submitted from (whose files MLflow logs with a model), so that archive is dropped here.
Under spark-submit the configuration leaves the master to the launcher (``load_config``
sees ``PYSPARK_GATEWAY_PORT``), so the session is the one spark-submit configured.
"""
from __future__ import annotations

import os
import sys

CODE_ARCHIVE_PREFIX = "p300-code-"  # pipeline.submit.code_archive names its zips so

if __name__ == "__main__":
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here
                   and not os.path.basename(p).startswith(CODE_ARCHIVE_PREFIX)]
    import pipeline  # noqa: F401  (bound now, before SparkContext adds --py-files to sys.path)
    import udfs  # noqa: F401
    from pipeline.cli import main

    main()
