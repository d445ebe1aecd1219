"""`python -m homeport` runs the same command line as the `homeport` script."""

from homeport.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
