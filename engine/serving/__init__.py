"""Serving: the router (production or the A/B candidate, sticky by key), feature checks,
the batched prediction log and its latency histograms.
"""
