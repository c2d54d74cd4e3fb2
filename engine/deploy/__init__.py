"""Deployments: the pure rules of deploy, A/B start, promote, abort and rollback, the service
that applies them (one transaction with its history row), the history export, and the
invariants `beast doctor` checks.
"""
