"""Datastores. One interface (`base.Store`); the allocator never knows which one it talks to.

Backends are imported lazily by `open_store`, so a local-store call never pays for another client.
"""
