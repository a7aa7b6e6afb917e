"""The report: tables, the verdict's prose, plots."""
