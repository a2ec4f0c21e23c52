"""Floods stdout with binary junk, \\r progress bars and very long lines, then one real metric line.

    python flood.py MEGABYTES EXIT_CODE
Writes ~MEGABYTES of junk to stdout (one line alone is MEGABYTES/2 long, never ended by \\n
until it is over), 'step 7 loss 0.25' as a parseable line, binary junk on stderr, then exits.
"""

import os
import random
import sys

mb = int(sys.argv[1])
code = int(sys.argv[2])
rnd = random.Random(7)
out = sys.stdout.buffer
chunk = bytes(rnd.getrandbits(8) for _ in range(1 << 16))
junk = chunk.replace(b"\n", b"x").replace(b"\r", b"y")
# Half the volume: one endless line without a newline.
for _ in range(mb * 8):
    out.write(junk)
out.write(b"\n")
# The other half: binary chunks with newlines and carriage returns mixed in, NULs, ANSI, invalid UTF-8.
for i in range(mb * 8):
    out.write(chunk)
    out.write(b"\r progress %d%% \x1b[31m\xff\xfe\x00\n" % (i % 100))
out.write(b"step 7 loss 0.25\n")
out.flush()
sys.stderr.buffer.write(b"\xff\xfe\x00\x1b[2J" + junk[:5000] + b"\nflood.py: junk on stderr too\n")
sys.stderr.flush()
os._exit(code)
