import sys

from codeassist.cli.main import main

sys.exit(main())
