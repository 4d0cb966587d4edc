"""Engine policy in plain Python: requests, KV blocks, the scheduler. No SimPy here."""
