"""``python -m bihmf``: the ``bihmf`` command without the console script."""

from bihmf.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
