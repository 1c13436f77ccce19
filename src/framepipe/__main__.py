import sys

from framepipe.ops.cli import main

sys.exit(main())
