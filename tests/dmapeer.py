#!/usr/bin/env python3
"""One Launcher of a Guest-to-Guest DMA stream, as its own process (tests/test_dma_streams.py,
bench/dma.py).

    python tests/dmapeer.py send|recv|ping|pong SHARE_FILE N MS [-D NAME=VALUE ...] [--image ELF]

Boots tests/guests/dma_stream.c in that role (the sender or the receiver of N messages, or one end
of N round trips), with page 0 of SHARE_FILE mapped MAP_SHARED at Guest-physical 0x400000 (where
the shared key lives) and memfd-backed memory (so that the other Launcher's Host can copy into it).
MS is the receiver's idle timeout or the sender's give-up time, in milliseconds; -D passes a
definition to the Guest's build (SECTIONS, SECLEN, NRX).  Guest ids and the DMA registry are those
of $LGUEST_KVM_IDDIR, which both peers must share.

Everything it learns goes to stdout as JSON lines, flushed at once: {"event": "boot"} when the
Guest is initialized, one line per line the Guest prints ("ready", "start", "progress" with n, and
the final "send", "recv" or "done" report with its key=value fields as numbers), each with "t", the
seconds since boot; and last {"event": "exit"} with the death message and the Host's exit counts.
"""
import argparse
import errno
import os
import pathlib
import struct
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
for p in (HERE.parent, HERE):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from lguest_kvm import abi          # noqa: E402
import guestrun                      # noqa: E402
from lguest_bench.devices import emit, parse   # noqa: E402,F401 - one event protocol for both

SHARED = 0x400000




def build_image(role, defines=()):
    return guestrun.build("dma_stream.c",
                          cflags=("-DROLE_" + role.upper(), *("-D" + d for d in defines)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("role", choices=("send", "recv", "ping", "pong"))
    ap.add_argument("share")
    ap.add_argument("n", type=int)
    ap.add_argument("ms", type=int)
    ap.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--image", help="a prebuilt dma_stream.c Guest for this role")
    args = ap.parse_args(argv)

    image = args.image or build_image(args.role, args.defines)
    fd = os.open(args.share, os.O_RDWR)
    g = guestrun.Booted(image, memfd=True, share=[(SHARED, fd, 0)],
                        cmdline=b"%d %d" % (args.n, args.ms))
    t0 = time.monotonic()
    emit(event="boot", pid=os.getpid(), guestid=g.lg.guest.guestid, kind=g.lg.kind)
    pending = b""
    why = None
    try:
        while why is None:
            try:
                r = g.lg.read(8)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
                why = g.lg.read(1024).rstrip(b"\0").decode("latin-1")
                break
            dma, key = struct.unpack("<II", r)
            if key != abi.LGUEST_CONSOLE_DMA_KEY:
                emit(event="dma", key=key)          # never for the shared key
                continue
            data = b"".join(g.dma_sections(dma))
            g.set_used_len(dma, len(data))
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                ev = parse(line.decode("latin-1"))
                if ev:
                    ev["t"] = round(time.monotonic() - t0, 4)
                    emit(**ev)
        lg = g.lg.guest
        emit(event="exit", why=why, elapsed=round(time.monotonic() - t0, 4),
             exits={str(k): v for k, v in sorted(lg.exits.items())}, assists=lg.assists)
    finally:
        g.close()
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
