"""Shared test machinery: real processes on loopback, ports, waiting. No mocks here."""
