"""Bundled price data: snapshot.json (built by build_snapshot.py) and its SOURCE.txt."""
