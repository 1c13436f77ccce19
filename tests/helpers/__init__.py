"""Test-only helpers: never imported by framepipe itself."""
