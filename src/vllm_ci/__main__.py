"""`python -m vllm_ci`: the client command, through its light entry point (signals taken before Dagger is imported)."""

from vllm_ci.entry import main

raise SystemExit(main())
