"""S9's client: open N keep-alive connections to 127.0.0.1:PORT, send one request on
each, read its response, then hold them all open and idle for HOLD seconds.
Writes {"held": k} to $BENCH_WORK/idle.status once every connection is settled.
With SNI (S11), the connections are TLS (the certificate is not verified).

usage: idle_conns.py PORT N HOLD [SNI]"""

import asyncio
import json
import os
import ssl
import sys

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def one(port, sem, sni):
    tls = {"ssl": tls_context(), "server_hostname": sni} if sni else {}
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, **tls), 5)
            writer.write(REQUEST)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await asyncio.wait_for(reader.readexactly(length), 5)
            return writer
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, ssl.SSLError):
            return None


async def main(port, n, hold, sni):
    sem = asyncio.Semaphore(500)
    writers = await asyncio.gather(*(one(port, sem, sni) for _ in range(n)))
    held = [w for w in writers if w is not None]
    path = os.path.join(os.environ.get("BENCH_WORK", "/tmp/portico-bench"), "idle.status")
    with open(path + ".tmp", "w") as f:
        json.dump({"held": len(held)}, f)
    os.rename(path + ".tmp", path)
    await asyncio.sleep(hold)
    for w in held:
        w.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]),
                     sys.argv[4] if len(sys.argv) > 4 else None))
