from cemr.cli import main
import sys
sys.exit(main())
