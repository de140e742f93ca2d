"""EZIGen (placeholder while the package is being written)."""
