"""Write the kernel symbol map (which source produced each GPU kernel symbol) for CI test selection.

The example has no GPU kernels, so the map is empty: an empty map is the signal vLLM's CI reads as
"nothing known"."""

import argparse
import gzip
import json

parser = argparse.ArgumentParser()
parser.add_argument("--build-root")
parser.add_argument("--source-root")
parser.add_argument("--commit", default="")
parser.add_argument("--out", required=True)
options = parser.parse_args()
with gzip.open(options.out, "wt") as out:
    json.dump({"commit": options.commit, "symbols": {}}, out)
