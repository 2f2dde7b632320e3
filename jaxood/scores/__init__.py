"""OOD scores and metrics."""
