"""Sessions: requests, the consent lifecycle and the manager that runs them."""
