"""Adaptation at serving time: `loradb route` chooses and composes the adapter for each request
in front of a vLLM engine (app.py), which it can also set up and start (launch.py)."""
