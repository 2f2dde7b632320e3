"""Datasets, preprocessing and sharded input pipelines."""
