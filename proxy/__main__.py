"""`python -m agentflux.proxy` is the `agentflux` command."""

import sys

from agentflux.proxy.cli import main

sys.exit(main())
