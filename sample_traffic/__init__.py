"""Sample traffic: a month of a fictional company's LLM API calls as a mitmproxy flow file.

`generate.py` writes `month.flows` deterministically from a seed; see README.md in this folder.
This is a development tool and fixture, not part of the installed product.
"""
