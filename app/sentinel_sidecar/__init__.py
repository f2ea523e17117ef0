"""sentinel-sidecar: what a pod's workload uses, delivered to Sentinel, S3 or a directory."""

__version__ = "0.1.0"
