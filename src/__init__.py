"""MLOperation: a reproducible DVC pipeline (prepare -> features -> train -> evaluate)."""
