"""The vocabulary every layer shares: errors, records, configuration, the workspace's paths,
names and text rules, ids, the clock. Imports nothing else of the engine.
"""
