"""Small pieces shared by the services (the event contract is producer/schema.py)."""
