"""`sentinel-sidecar report`: runs read back from their chunks, the recommendation, the table and
the HTML page. Nothing the agent loads to record a run imports it."""
