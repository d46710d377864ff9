"""Whole-system tests: real processes, real browser."""
