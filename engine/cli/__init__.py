"""The `beast` command: argument parsing, one module per group of subcommands, and the
plain-text rendering of engine records.
"""
