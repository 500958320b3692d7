"""Plot rendering (matplotlib) shared by the evaluate stage and the PR report."""
