"""Executor side: pure pandas-in, pandas-out functions run by applyInPandas, testable without Spark."""
