"""Base-model emulation: the capability table, framing requests, cleaning outputs, probing models."""
