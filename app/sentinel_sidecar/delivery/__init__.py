"""Where a run goes: a destination (local directory, the pod's own S3 bucket, the Sentinel API)
chosen by `registry`, chunks moved there by the `upload` worker on the `retry` policy."""
