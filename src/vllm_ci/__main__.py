"""`python -m vllm_ci`: the client command."""

from vllm_ci.cli import main

raise SystemExit(main())
