"""spark-submit's primary resource: `spark-submit [options] .../pipeline/driver.py [p300 arguments]`.

spark-submit runs a Python application from a file, not a module, and puts that file's
folder first on ``sys.path``; this package's folder must not be there (its modules
``config``, ``spark``, ... would shadow top-level ones), so it is removed before
``p300``'s command line runs. Under spark-submit the configuration leaves the master to
the launcher (``load_config`` sees ``PYSPARK_GATEWAY_PORT``), so the session is the one
spark-submit configured. ``pipeline.submit`` builds the whole command line.
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    from pipeline.cli import main

    main()
