"""Paths used by the pipeline, relative to the project root (the folder holding dvc.yaml)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = ROOT / "params.yaml"

DATA_DIR = ROOT / "data"
EXTERNAL_DIR = DATA_DIR / "external"
RAW_DATA = DATA_DIR / "raw" / "dataset.csv"
INTERIM_DIR = DATA_DIR / "interim"
FEATURES_ARTIFACT = INTERIM_DIR / "features.joblib"
TRAIN_FEATURES = INTERIM_DIR / "train_features.csv"
PROCESSED_DIR = DATA_DIR / "processed"
TRAIN_DATA = PROCESSED_DIR / "train.csv"
TEST_DATA = PROCESSED_DIR / "test.csv"

MODELS_DIR = ROOT / "models"
MODEL_FILE = MODELS_DIR / "model.joblib"

METRICS_DIR = ROOT / "metrics"
SCORES_FILE = METRICS_DIR / "scores.json"
PLOTS_DIR = ROOT / "plots"
PLOT_IMAGES_DIR = PLOTS_DIR / "images"

REPORTS_DIR = ROOT / "reports"
PREDICTIONS_FILE = REPORTS_DIR / "predictions.csv"
