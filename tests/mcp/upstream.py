#!/usr/bin/env python3
"""An upstream MCP server for callproof's tests, served by the official Python SDK (`mcp` on
PyPI) over Streamable HTTP at `/mcp`. Runs under either SDK major version:

  mcp 1.x  FastMCP: legacy protocol revisions only (initialize + Mcp-Session-Id)
  mcp 2.x  MCPServer: both eras on one endpoint (2026-07-28 stateless and the legacy handshake)

Tools:
  echo          returns its arguments as structuredContent and as JSON text
  get_customer  a customer record with PII in text, structuredContent and an embedded resource
  slow          sends `steps` progress notifications, `interval_ms` apart, then answers
  fail          a tool error: a result with isError true
  boom          a JSON-RPC error (code -32603) instead of a result
  whoami        the Authorization header this request carried, and the names of all its headers
  route         its `region` argument is annotated `x-mcp-header: Region`, so a 2026-07-28 call
                must mirror it in `Mcp-Param-Region` (SDK 2.x checks; 1.x ignores the annotation)

Prints `PORT <n>` on stdout once it listens (on `--port`, 0 for a free one chosen by the OS),
then serves until killed. `--page-size N` makes tools/list return N tools per page with a cursor;
`--json` makes it answer requests with one JSON body instead of an SSE stream.
"""

import argparse
import asyncio
import json
import socket
import sys
from typing import Annotated, Any

import uvicorn
from pydantic import Field

try:  # mcp 2.x
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.shared.exceptions import MCPError
    from mcp.types import CallToolResult, EmbeddedResource, ListToolsResult, TextContent, TextResourceContents

    SDK = 2
except ImportError:  # mcp 1.x
    from mcp import types as v1_types
    from mcp.server.fastmcp import Context, FastMCP
    from mcp.shared.exceptions import McpError
    from mcp.types import (
        CallToolResult,
        EmbeddedResource,
        ErrorData,
        ListToolsResult,
        TextContent,
        TextResourceContents,
    )

    SDK = 1

CUSTOMER = {
    "id": "c-42",
    "name": "Jane Doe",
    "email": "jane.doe@example.com",
    "card_number": "4111 1111 1111 1111",
    "iban": "DE89 3704 0044 0532 0130 00",
}


def result(content: list[Any], structured: Any = None, is_error: bool = False) -> CallToolResult:
    """A CallToolResult built with the field spelling of the running SDK."""
    if SDK == 2:
        return CallToolResult(content=content, structured_content=structured, is_error=is_error)
    return CallToolResult(content=content, structuredContent=structured, isError=is_error)


def text(value: str) -> TextContent:
    return TextContent(type="text", text=value)


def request_headers(ctx: Context) -> dict[str, str]:
    if SDK == 2:
        headers = ctx.headers or {}
    else:
        request = ctx.request_context.request
        headers = request.headers if request is not None else {}
    return {name.lower(): value for name, value in headers.items()}


def add_tools(server: Any) -> None:
    @server.tool()
    def echo(message: str, data: dict[str, Any] | None = None) -> CallToolResult:
        """Returns its arguments unchanged."""
        # Tests count executions in the server's log.
        print(f"CALL echo {message}", file=sys.stderr, flush=True)
        arguments = {"message": message, "data": data}
        return result([text(json.dumps(arguments, ensure_ascii=False))], {"arguments": arguments})

    @server.tool()
    def get_customer(customer_id: str) -> CallToolResult:
        """A customer record, personal data included."""
        record = dict(CUSTOMER, id=customer_id)
        summary = (
            f"Customer {record['name']} ({customer_id}): email {record['email']}, "
            f"card {record['card_number']}, IBAN {record['iban']}"
        )
        resource = EmbeddedResource(
            type="resource",
            resource=TextResourceContents(
                uri=f"crm://customers/{customer_id}",
                mimeType="application/json",
                text=json.dumps(record),
            ),
        )
        return result([text(summary), resource], {"customer": record})

    @server.tool()
    async def slow(ctx: Context, steps: int = 3, interval_ms: int = 20) -> str:
        """Reports progress `steps` times, then answers."""
        for step in range(1, steps + 1):
            await asyncio.sleep(interval_ms / 1000)
            await ctx.report_progress(step, steps, f"step {step} of {steps}")
        return f"done after {steps} steps"

    @server.tool()
    def fail(reason: str = "the tool failed") -> CallToolResult:
        """A tool error (isError), not a protocol error."""
        return result([text(reason)], None, True)

    @server.tool()
    def boom() -> str:
        """Raises: the SDK answers a JSON-RPC error."""
        raise jsonrpc_error("boom: the tool raised")

    @server.tool()
    def route(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})], message: str) -> str:
        """Answers with its arguments; `region` travels in a header too (2026-07-28)."""
        return f"{region}: {message}"

    @server.tool()
    def whoami(ctx: Context) -> CallToolResult:
        """The Authorization header of this request, and the names of all its headers."""
        headers = request_headers(ctx)
        seen = {"authorization": headers.get("authorization"), "header_names": sorted(headers)}
        return result([text(json.dumps(seen))], seen)


def jsonrpc_error(message: str) -> Exception:
    if SDK == 2:
        return MCPError(-32603, message)
    return McpError(ErrorData(code=-32603, message=message))


def page(tools: list[Any], cursor: str | None, page_size: int) -> tuple[list[Any], str | None]:
    start = int(cursor) if cursor else 0
    end = start + page_size
    return tools[start:end], (str(end) if end < len(tools) else None)


def build_v2(page_size: int | None, json_response: bool) -> Any:
    class PagedServer(MCPServer):
        async def _handle_list_tools(self, ctx: Any, params: Any) -> ListToolsResult:
            tools = await self.list_tools()
            if page_size is None:
                return ListToolsResult(tools=tools)
            cursor = params.cursor if params is not None else None
            tools, next_cursor = page(tools, cursor, page_size)
            return ListToolsResult(tools=tools, next_cursor=next_cursor)

    server = PagedServer("callproof-test-upstream", version="sdk2")
    add_tools(server)
    return server.streamable_http_app(json_response=json_response)


def build_v1(page_size: int | None, json_response: bool) -> Any:
    # FastMCP turns every exception of a tool into an isError result, so `boom` is answered by a
    # wrapper of the low-level tools/call handler, whose McpError the SDK sends as a JSON-RPC error.
    server = FastMCP("callproof-test-upstream", json_response=json_response)
    add_tools(server)
    lowlevel = server._mcp_server
    call_tool = lowlevel.request_handlers[v1_types.CallToolRequest]

    async def call_tool_or_raise(request: Any) -> Any:
        if request.params.name == "boom":
            raise jsonrpc_error("boom: the tool raised")
        return await call_tool(request)

    lowlevel.request_handlers[v1_types.CallToolRequest] = call_tool_or_raise
    if page_size is not None:

        async def list_tools_paged(request: v1_types.ListToolsRequest) -> ListToolsResult:
            tools = await server.list_tools()
            # The SDK also calls this with None, to fill its tool cache before a first call.
            params = request.params if request is not None else None
            cursor = params.cursor if params is not None else None
            tools, next_cursor = page(tools, cursor, page_size)
            return ListToolsResult(tools=tools, nextCursor=next_cursor)

        lowlevel.list_tools()(list_tools_paged)
    return server.streamable_http_app()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--page-size", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    app = build_v2(args.page_size, args.json) if SDK == 2 else build_v1(args.page_size, args.json)
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and without it
    # uvicorn's separate writes of headers and body cost 40 ms per call on a reused connection
    # (Nagle and delayed ACKs).
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    # Listening before uvicorn starts: a client that connects at once waits in the backlog.
    listener.listen(128)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    print(f"SDK {SDK}", file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    server.run(sockets=[listener])


if __name__ == "__main__":
    main()
