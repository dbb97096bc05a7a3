"""Setting up capture: the interception CA, firewall redirect checks, and `llm-shadow doctor`."""
