"""Model artifacts: finding, checking and validating model files (in a child process), the
catalogue of registered artifacts and their version names, and the service that registers.
"""
