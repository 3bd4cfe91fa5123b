"""``python -m osma``: the command line (also the entry point for ``torchrun -m osma train ...``)."""
from osma.cli import main

if __name__ == "__main__":
    main()
