"""Duplex behaviour at run time: the streaming engine that runs the model's own `step`
free-running (`engine`)."""
