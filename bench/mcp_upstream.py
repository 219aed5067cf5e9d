#!/usr/bin/env python3
"""The upstream of `bench/gateway.sh --mcp`: the tests' MCP server (tests/mcp/upstream.py, official
Python SDK 2.x, JSON answers) on a listener with TCP_NODELAY.

upstream.py hands uvicorn a socket made with proto 0, and asyncio only sets TCP_NODELAY on
connections whose socket says IPPROTO_TCP; uvicorn then writes an answer's headers and body in
two sends, and Nagle holds the body until the client's delayed ACK: 40 ms per call on a
keep-alive connection, which would be measured as the upstream's latency. A server started by
`uvicorn.run(app, host=..., port=...)` does not pay it, so neither does the bench's.

Prints `PORT <n>` once it listens, as upstream.py does.
"""

import socket
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "mcp"))
import upstream  # noqa: E402


def main() -> None:
    if upstream.SDK != 2:
        sys.exit("the bench needs the MCP Python SDK 2.x (2026-07-28, stateless)")
    app = upstream.build_v2(page_size=None, json_response=True)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it on Linux; asyncio sets it too, now that proto says TCP.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    server.run(sockets=[listener])


if __name__ == "__main__":
    main()
