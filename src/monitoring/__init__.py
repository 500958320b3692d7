"""Monitoring of the served model: drift of inputs against the training data."""
