#!/usr/bin/env python3
"""Prints the first port of each run of consecutive free ports asked for, e.g.
`free_ports.py 6 6 1 1` prints four bases: two runs of six ports, then two single ports, none
overlapping and none a port something on this machine is already bound to. The shell scripts
that bring up a stack of their own (schemathesis, the console's browser walk) read them."""
import random
import socket
import sys


def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def main(widths):
    taken, picks = set(), []
    for width in widths:
        while True:
            base = random.randrange(20000, 60000 - width)
            span = set(range(base, base + width))
            if not span & taken and all(free(p) for p in span):
                taken |= span
                picks.append(base)
                break
    print(*picks)


if __name__ == "__main__":
    main([int(width) for width in sys.argv[1:]])
