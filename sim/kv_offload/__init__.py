"""KV offloading to host memory and disk (vLLM's native OffloadingConnector): tiers, links, connector."""
