"""State: the SQLite connection (one way to open it, errors turned into refusals), the
numbered migrations, backup and restore, and the invariants `beast doctor` checks.
"""
