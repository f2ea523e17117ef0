"""Who and where the run is: settings, the pod and its node from the Kubernetes API, the cloud's
metadata services, the host's own facts."""
