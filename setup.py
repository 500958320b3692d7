"""Makes `src` importable (`pip install -e .`); dependencies live in requirements*.txt."""

from setuptools import find_packages, setup

setup(
    name="mloperation",
    version="0.1.0",
    description="CI/CD for ML: DVC pipeline, MLflow tracking, CML reports, Flask predictor",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["src", "src.*", "flask_app", "flask_app.*"]),
)
