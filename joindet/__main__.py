"""``python -m joindet``: the command line."""

from joindet.flows.cli import main

if __name__ == "__main__":
    main()
