"""asyncio's loop.sendfile for examples/sendfile.rs --bench: serves one file to every
connection on 127.0.0.1 with `await loop.sendfile(transport, file)` (zero-copy
os.sendfile on the selector loop), then closes. Prints the port, then serves until
stdin closes.

    python3 tools/asyncio_sendfile_server.py PATH [--fallback]

--fallback makes asyncio use its read-and-write fallback (the transport is marked as
not sendfile-compatible), for comparison with aioport's forced fallback.
"""

import asyncio
import sys


class Sender(asyncio.Protocol):
    def __init__(self, path, fallback):
        self.path = path
        self.fallback = fallback

    def connection_made(self, transport):
        self.transport = transport
        asyncio.get_running_loop().create_task(self.send())

    async def send(self):
        loop = asyncio.get_running_loop()
        with open(self.path, "rb") as f:
            if self.fallback:
                await loop._sendfile_fallback(self.transport, f, 0, None)
            else:
                await loop.sendfile(self.transport, f, fallback=False)
        self.transport.close()


async def main():
    path = sys.argv[1]
    fallback = "--fallback" in sys.argv[2:]
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Sender(path, fallback), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    # Serve until the parent closes our stdin.
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


asyncio.run(main())
