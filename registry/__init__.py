"""The registry: the file that lists downstream MCP servers, and agentflux's state directory."""
