"""beast-mode's Textual console. It only draws and asks the engine (issue 5 builds it)."""
