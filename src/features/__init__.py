"""Stage `features`: learn the feature schema and fit the preprocessor."""
