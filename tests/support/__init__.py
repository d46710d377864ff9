"""Helpers shared by test suites (real services, no mocks)."""
