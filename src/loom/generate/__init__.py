"""Generation: backends, the engine that runs N branches, and what each node records."""
