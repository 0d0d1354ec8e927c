"""A WebSocket upstream for the proxy tests that ends connections in chosen ways.

It echoes the first message of each connection, then, by request path:

  /close/CODE/REASON   closes with that code and (percent-decoded) reason
  /close-no-code       sends a close frame without a status code
  /drop                drops the TCP connection without a close frame
  anything else        keeps echoing

Started as `python3 close-upstream.py`; it listens on 127.0.0.1 (a free port) and prints
`listening on 127.0.0.1:PORT`. It stops when its standard input closes or on SIGTERM.
"""

import asyncio
import signal
import sys
from urllib.parse import unquote

from websockets.asyncio.server import serve


async def handler(ws):
    path = ws.request.path
    try:
        first = await ws.recv()
    except Exception:
        return
    await ws.send(first)
    if path.startswith("/close/"):
        _, _, code, reason = path.split("/", 3)
        await ws.close(int(code), unquote(reason))
    elif path == "/close-no-code":
        # None: the frame carries no status code (websockets passes it to send_close).
        await ws.close(None)
    elif path == "/drop":
        ws.transport.abort()
    else:
        async for message in ws:
            await ws.send(message)


async def main():
    stop = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.read(1) or stop.done() or stop.set_result(None))
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on 127.0.0.1:{port}", flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
