"""State: the storage seam (engine.store.base: `Store` and `Tx`, one repository per domain)
and its backends — SQLite, the embedded default, in engine/store/sqlite/.
"""
