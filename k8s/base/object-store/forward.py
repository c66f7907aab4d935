"""Forward one TCP port to another: the S3 gateway's only door out of its pod.

``weed s3`` binds its HTTP (S3) and gRPC ports to one address (-ip.bind). Its gRPC port takes
unauthenticated identity updates (SeaweedS3IamCache.PutIdentity), so the gateway binds to
127.0.0.1 and this forwarder, in its own container of the same pod, publishes the S3 port alone:

    python forward.py LISTEN_HOST:PORT TARGET_HOST:PORT

Standard library only (asyncio), so it runs in any Python image.
"""

import asyncio
import sys

CHUNK = 1 << 20  # large reads: checkpoints of many GB pass through here


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close: the other direction may still be sending
    except (ConnectionError, OSError):
        writer.close()


async def _serve(client_reader, client_writer, target_host: str, target_port: int) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(target_host, target_port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(
        _pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer), return_exceptions=True
    )
    for writer in (client_writer, upstream_writer):
        writer.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def main(listen: str, target: str) -> None:
    listen_host, listen_port = _address(listen)
    target_host, target_port = _address(target)
    server = await asyncio.start_server(
        lambda r, w: _serve(r, w, target_host, target_port), listen_host, listen_port, reuse_address=True
    )
    print(f"forwarding {listen} -> {target}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: forward.py LISTEN_HOST:PORT TARGET_HOST:PORT")
    asyncio.run(main(sys.argv[1], sys.argv[2]))
