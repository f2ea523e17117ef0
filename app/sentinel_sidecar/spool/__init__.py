"""The durable spool on the emptyDir: segment files of rows, the upload cursor `state.json`,
and how both are written so a crash never tears them. Imports nothing of delivery or identity."""
