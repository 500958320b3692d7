"""Stage `prepare`: load, validate and split the raw table."""
