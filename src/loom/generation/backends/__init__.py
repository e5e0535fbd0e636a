"""One module per wire format. Import the one you need; none is imported by navigation."""
