"""Pieces the services share: the event and control contract (contract.py), the settings
base (settings.py) and logging set-up (logs.py)."""
