"""p300-pipeline, driver side: configuration, Spark session, storage and one module per job task."""
__version__ = "0.1.0"
