"""`python -m agentflux.proxy` is the `agentflux` command."""

import sys

from agentflux.proxy.cli import main

if __name__ == "__main__":  # also imported by multiprocessing's spawn (vLLM workers)
    sys.exit(main())
