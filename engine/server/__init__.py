"""The headless engine's processes: the daemon (`beast engine`), its HTTP API and Prometheus
metrics, the model watcher, and the retraining worker process.
"""
