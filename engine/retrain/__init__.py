"""Retraining: triggers, the training search and its gate, jobs and their worker processes,
training on a Dask cluster (dask_training), and MLflow tracking.
"""
