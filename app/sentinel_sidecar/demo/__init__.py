"""`sentinel-sidecar demo`: the built-in workload the demo tracks."""
