import sys

from cemr.cli import main

if __name__ == "__main__":
    sys.exit(main())
