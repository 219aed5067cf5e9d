//! The MCP gateway (issue 16): callproof as an MCP server for agents, and as the MCP client of
//! the configured upstream MCP servers. For now only the upstream client, wired into `/mcp` in
//! the next step.

pub mod upstream;
