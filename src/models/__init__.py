"""Stages `train` and `evaluate`, the model artifact and batch prediction."""
