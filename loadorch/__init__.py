"""spike: orchestrate distributed "viral spike" load tests with Gatling injectors."""

__version__ = "0.1.0"
