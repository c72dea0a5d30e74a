"""Build NIXL from source for the installed torch (only when BUILD_NIXL=true). The example has no
NIXL; the file is here because extensions-build copies it in."""

import sys

sys.exit("this example does not build NIXL")
