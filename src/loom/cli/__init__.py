"""The `loom` command: a thin shell over the library."""
