"""Retraining: triggers, the training search and its gate, jobs and their worker processes,
and MLflow tracking.
"""
