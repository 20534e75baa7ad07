"""Reusable test support: checks parameterised by the implementation under test."""
