"""Generated gRPC stubs of eventflow.v1 (see libs/client-python/generate.py)."""
