"""Allow ``python -m smearscan``."""

from smearscan.cli import main

if __name__ == "__main__":
    main()
