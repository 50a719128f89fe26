"""Open-model load testing of the gateway (R20's profile): `python -m loadtest --help`."""
