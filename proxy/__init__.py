"""The agentflux MCP server: the downstream hub and the upstream surfaces."""

__version__ = "0.1.0"
