#!/usr/bin/env python3
"""An agent framework's MCP client pointed at callproof's `/mcp`: LangChain's
`langchain-mcp-adapters` (`MultiServerMCPClient`, over the official SDK 1.x), as a LangChain
agent loads its tools. Lists the tools it is offered and invokes `crm__echo` and
`crm__get_customer` as LangChain tools; prints one JSON object with what it saw. No model is
involved: the framework's tool plumbing is what is under test.
"""

import argparse
import asyncio
import json

from langchain_mcp_adapters.client import MultiServerMCPClient


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    client = MultiServerMCPClient(
        {
            "callproof": {
                "transport": "streamable_http",
                "url": args.url,
                "headers": {"Authorization": f"Bearer {args.token}"},
            }
        }
    )
    tools = await client.get_tools()
    by_name = {tool.name: tool for tool in tools}
    echo = await by_name["crm__echo"].ainvoke({"message": "hello from langchain"})
    customer = await by_name["crm__get_customer"].ainvoke({"customer_id": "c-42"})
    print(json.dumps({"tools": sorted(by_name), "echo": echo, "customer": customer}, default=str))


if __name__ == "__main__":
    asyncio.run(main())
