#!/usr/bin/env python3
"""Session 17's command, kept working: `ab.py BIN_A BIN_B PAGES CONNS SECONDS ROUNDS` runs
scripts/bench/redis-ab.py (where the script lives since session 18) with the two builds over
loopback TCP."""
import os
import sys

if len(sys.argv) != 7:
    sys.exit(__doc__)
script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../../scripts/bench/redis-ab.py")
bin_a, bin_b, pages, conns, seconds, rounds = sys.argv[1:]
os.execv(sys.executable, [sys.executable, script, pages, conns, seconds, rounds, bin_a, bin_b])
