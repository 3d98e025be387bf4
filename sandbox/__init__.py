"""Launching downstream MCP servers as isolated processes."""
