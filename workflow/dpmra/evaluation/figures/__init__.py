"""The report's figures and HTML tables, one module per topic."""
