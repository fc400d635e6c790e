"""``python -m pipeline.serving --config-json FILE``: run the local endpoint server."""
import sys

from pipeline.serving.server import main

sys.exit(main())
