"""Model artifacts: finding, checking and validating model files (in a child process), and
the catalogue of registered artifacts and their version names.
"""
