"""Monitoring: rollups, metrics per window, data and model drift, A/B statistics, baselines,
alerts and feedback (the labels that arrive later).
"""
