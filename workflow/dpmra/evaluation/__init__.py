"""Evaluation: scores and tables, synthetic-data quality, the memorisation check, the DP audit, the figures."""
