"""`python -m loom`: the same entry point as the `loom` command."""

from loom.cli.entry import main

if __name__ == "__main__":
    main()
