#!/usr/bin/env python3
"""An agent's MCP client, from the official Python SDK, pointed at callproof's `/mcp`.

  mcp 1.x  `streamablehttp_client` + `ClientSession`, the pair LangChain's adapters use
           (legacy protocol revisions only)
  mcp 2.x  `Client` over `streamable_http_client`, in `--mode legacy`, `auto` or `2026-07-28`

It lists every tool it is offered (following cursors), calls `crm__echo`, `crm__get_customer`
and `crm__slow` (with a progress callback), tries `crm__whoami` (which it may not call), and
prints one JSON object with what it saw.
"""

import argparse
import asyncio
import json
from typing import Any

try:  # mcp 2.x
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    SDK = 2
except ImportError:  # mcp 1.x
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    SDK = 1


def structured(result: Any) -> Any:
    return getattr(result, "structured_content" if SDK == 2 else "structuredContent", None)


def is_error(result: Any) -> Any:
    return getattr(result, "is_error" if SDK == 2 else "isError", None)


def texts(result: Any) -> list[str]:
    return [block.text for block in result.content if getattr(block, "type", None) == "text"]


async def exercise(session: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {"sdk": SDK}
    names: list[str] = []
    cursor = None
    while True:
        page = await session.list_tools(cursor=cursor)
        names.extend(tool.name for tool in page.tools)
        # 2.x names fields in snake_case, 1.x as on the wire.
        cursor = getattr(page, "next_cursor", None) if SDK == 2 else page.nextCursor
        if not cursor:
            break
    seen["tools"] = names

    echo = await session.call_tool("crm__echo", {"message": "hello from the sdk"})
    seen["echo"] = texts(echo)
    customer = await session.call_tool("crm__get_customer", {"customer_id": "c-42"})
    seen["customer"] = {"text": texts(customer), "structured": structured(customer)}

    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    slow = await session.call_tool("crm__slow", {"steps": 3, "interval_ms": 20}, progress_callback=on_progress)
    seen["slow"] = texts(slow)
    seen["progress"] = progress

    try:
        hidden = await session.call_tool("crm__whoami", {})
        seen["hidden"] = {"is_error": is_error(hidden), "text": texts(hidden)}
    except Exception as error:  # the SDKs raise on a JSON-RPC error
        seen["hidden"] = {"error": str(error)}
    return seen


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--mode", default="legacy")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"}
    if SDK == 1:
        async with streamablehttp_client(args.url, headers=headers) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                seen = await exercise(session)
    else:
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            transport = streamable_http_client(args.url, http_client=http)
            async with Client(transport, mode=args.mode) as client:
                seen = await exercise(client)
                seen["protocol_version"] = str(getattr(client, "protocol_version", "") or "")
    print(json.dumps(seen, default=str))


if __name__ == "__main__":
    asyncio.run(main())
