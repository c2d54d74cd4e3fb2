"""Deployments: the pure rules of deploy, A/B start, promote, abort and rollback, and the
append-only history they are recorded in.
"""
